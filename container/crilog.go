package container

import (
	"bufio"
	"errors"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"sync"
	"time"
)

// maxLogLine is the longest record the CRI log gets; longer lines are split
// into partial (P) records, as kubelet expects.
const maxLogLine = 16 * 1024

// criLog writes a container's output in the CRI log format that kubelet and
// crictl read: "<RFC3339Nano time> <stream> <P|F> <content>\n".
type criLog struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func openCRILog(path string) (*criLog, error) {
	l := &criLog{path: path}
	if err := l.reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// reopen starts a new file at path, as kubelet asks after rotating the log.
func (l *criLog) reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o640)
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

// copyStream reads r to its end and logs it line by line as stream.
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
				l.record(stream, false, line)
			}
			return
		}
	}
}
