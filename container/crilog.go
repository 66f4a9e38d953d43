package container

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// maxLogLine is the longest record the CRI log gets; longer lines are split
// into partial (P) records, as kubelet expects.
const maxLogLine = 16 * 1024

// criLog writes a container's output in the CRI log format that kubelet and
// crictl read: "<RFC3339Nano time> <stream> <P|F> <content>\n".
type criLog struct {
	mu       sync.Mutex
	dir, rel string // the file is rel below dir
	f        *os.File
}

// openCRILog opens the log at logPath, which must stay below logDir (the
// pod's log directory), or below its own directory when logDir is "".
func openCRILog(logDir, logPath string) (*criLog, error) {
	dir, rel, err := logLocation(logDir, logPath)
	if err != nil {
		return nil, err
	}
	l := &criLog{dir: dir, rel: rel}
	if err := l.reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// logLocation splits a log path into the directory it is opened from and
// the path below it.
func logLocation(logDir, logPath string) (dir, rel string, err error) {
	if logDir == "" {
		return filepath.Dir(logPath), filepath.Base(logPath), nil
	}
	rel, err = filepath.Rel(logDir, logPath)
	if err != nil || !filepath.IsLocal(rel) {
		return "", "", fmt.Errorf("log %s is not inside the log directory %s: %w", logPath, logDir, errdefs.ErrInvalidArgument)
	}
	return logDir, rel, nil
}

// reopen starts a new file at the log path, as kubelet asks after rotating
// the log. The directory it lies in is shared with whatever else may write
// there (log agents with a host mount): the path is resolved below the
// log directory without following any symlink, so this root process
// never writes through a link planted there, and only a regular file is
// written to.
func (l *criLog) reopen() error {
	f, err := fsutil.OpenBeneath(l.dir, l.rel, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *criLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

func (l *criLog) record(stream string, partial bool, content []byte) {
	tag := "F"
	if partial {
		tag = "P"
	}
	buf := make([]byte, 0, len(content)+64)
	buf = time.Now().UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, content...)
	buf = append(buf, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_, _ = l.f.Write(buf)
	}
}

// copyStream reads r to its end and logs it line by line as stream. A last
// line without a newline is a partial (P) record, as containerd and CRI-O
// write it: kubelet then reads the output as it was ("DONE" stays "DONE",
// in a termination message from the log too).
func (l *criLog) copyStream(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			l.record(stream, false, line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			l.record(stream, true, line)
		default:
			if len(line) > 0 {
				l.record(stream, true, line)
			}
			return
		}
	}
}
