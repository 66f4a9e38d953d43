package container

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Attaching reaches a container's own stdio, which only its supervisor
// holds: the supervisor listens on attach.sock in the state directory and
// speaks a small framed protocol with Runtime.Attach. Each frame is a kind
// byte, a big-endian uint32 length and the payload.
const (
	attachSocket = "attach.sock"

	frameStdout byte = 1 // supervisor -> client
	frameStderr byte = 2 // supervisor -> client
	frameStdin  byte = 3 // client -> supervisor: input
	frameClose  byte = 4 // client -> supervisor: end of input
	frameResize byte = 5 // client -> supervisor: width, height (uint16 each)

	maxFrame = 1 << 20
	// attachWriteTimeout drops a client that stops reading, so a stuck
	// client never stalls the container's output or its log.
	attachWriteTimeout = 5 * time.Second
)

func writeFrame(w io.Writer, kind byte, payload []byte) error {
	hdr := [5]byte{kind}
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(append(hdr[:], payload...)); err != nil {
		return err
	}
	return nil
}

func readFrame(r io.Reader, buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("attach frame of %d bytes", n)
	}
	if int(n) > cap(buf) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return hdr[0], buf, err
}

// attachServer is the supervisor's side: it copies the container's output
// to every attached client and their input to the container's stdin.
type attachServer struct {
	mu        sync.Mutex
	clients   map[net.Conn]bool
	stdin     io.WriteCloser // nil when the container has no stdin
	stdinOnce bool
	closed    bool     // stdin closed for good
	pty       *os.File // the pty master of a tty container
	ln        net.Listener
}

// listenAttach binds attach.sock in dir. The path is reached through a
// descriptor of dir, as a full state path may exceed the 108 bytes a
// socket address holds.
func listenAttach(dir string, stdin io.WriteCloser, stdinOnce bool, pty *os.File) (*attachServer, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ln, err := net.Listen("unix", "/proc/self/fd/"+strconv.Itoa(int(d.Fd()))+"/"+attachSocket)
	if err != nil {
		return nil, fmt.Errorf("attach socket: %w", err)
	}
	s := &attachServer{clients: map[net.Conn]bool{}, stdin: stdin, stdinOnce: stdinOnce, pty: pty, ln: ln}
	go s.accept()
	return s, nil
}

func (s *attachServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.clients[c] = true
		s.mu.Unlock()
		go s.serve(c)
	}
}

// serve reads one client's input until it goes away.
func (s *attachServer) serve(c net.Conn) {
	defer s.drop(c)
	buf := make([]byte, 32<<10)
	for {
		kind, payload, err := readFrame(c, buf)
		if err != nil {
			s.endInput()
			return
		}
		switch kind {
		case frameStdin:
			s.mu.Lock()
			in := s.stdin
			if s.closed {
				in = nil
			}
			s.mu.Unlock()
			if in != nil {
				if _, err := in.Write(payload); err != nil {
					klog.V(2).InfoS("Attach: write to container stdin", "err", err)
				}
			}
		case frameClose:
			s.endInput()
		case frameResize:
			if s.pty != nil && len(payload) == 4 {
				ws := &unix.Winsize{Col: binary.BigEndian.Uint16(payload), Row: binary.BigEndian.Uint16(payload[2:])}
				_ = unix.IoctlSetWinsize(int(s.pty.Fd()), unix.TIOCSWINSZ, ws)
			}
		}
	}
}

// endInput closes the container's stdin when it is stdin_once: the first
// client that ends its input ends the container's. On a terminal that is
// an end-of-file character: the pty also carries the output.
func (s *attachServer) endInput() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stdinOnce || s.closed || s.stdin == nil {
		return
	}
	s.closed = true
	if s.pty != nil {
		_, _ = s.pty.Write([]byte{4})
		return
	}
	_ = s.stdin.Close()
}

func (s *attachServer) drop(c net.Conn) {
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
	c.Close()
}

// writer returns the sink of one output stream.
func (s *attachServer) writer(kind byte) io.Writer {
	return attachWriter{s: s, kind: kind}
}

type attachWriter struct {
	s    *attachServer
	kind byte
}

func (w attachWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	clients := make([]net.Conn, 0, len(w.s.clients))
	for c := range w.s.clients {
		clients = append(clients, c)
	}
	w.s.mu.Unlock()
	for _, c := range clients {
		_ = c.SetWriteDeadline(time.Now().Add(attachWriteTimeout))
		if err := writeFrame(c, w.kind, p); err != nil {
			w.s.drop(c)
		}
	}
	return len(p), nil
}

// close ends every session: the container has exited.
func (s *attachServer) close() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		c.Close()
	}
}

// AttachOptions are the streams of an attach session; nil ones are not
// attached.
type AttachOptions struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan TerminalSize
}

// Attach connects the streams to the running container's own stdio until
// the container exits or ctx ends. Input reaches the container only if it
// was created with Stdin.
func (r *Runtime) Attach(ctx context.Context, id string, o AttachOptions) error {
	dir, _, err := r.existing(id)
	if err != nil {
		return err
	}
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if st.Status != StatusRunning {
		return fmt.Errorf("container %s is %s, not running: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(int(d.Fd()))+"/"+attachSocket)
	d.Close()
	if err != nil {
		return fmt.Errorf("container %s: attach: %w", id, err)
	}
	defer conn.Close()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	var wmu sync.Mutex
	send := func(kind byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return writeFrame(conn, kind, p)
	}
	if o.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := o.Stdin.Read(buf)
				if n > 0 && send(frameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					_ = send(frameClose, nil)
					return
				}
			}
		}()
	}
	if o.Resize != nil {
		go func() {
			for sz := range o.Resize {
				p := make([]byte, 4)
				binary.BigEndian.PutUint16(p, sz.Width)
				binary.BigEndian.PutUint16(p[2:], sz.Height)
				if send(frameResize, p) != nil {
					return
				}
			}
		}()
	}
	buf := make([]byte, 32<<10)
	for {
		kind, payload, err := readFrame(conn, buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("container %s: attach: %w", id, err)
		}
		var w io.Writer
		switch kind {
		case frameStdout:
			w = o.Stdout
		case frameStderr:
			w = o.Stderr
		}
		if w != nil {
			if _, err := w.Write(payload); err != nil {
				return nil // the client went away
			}
		}
	}
}
