package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	pb "github.com/cri-mini/cri-mini/proto/supervisor/v1"
)

// After create, the daemon reaches a container's supervisor through its
// control socket, supervisor.sock in the state directory: the supervisor
// holds the container's stdio (attach) and its log (reopen). The messages
// are proto/supervisor/v1's Request and Reply, each prefixed with its
// length; a connection opens with a Hello each way and both sides then
// speak the lower version, so a daemon upgraded while containers run still
// talks to the supervisors an older daemon started.
const (
	controlSocket = "supervisor.sock"

	// The control protocol versions this binary speaks, as client (the
	// daemon) and as server (a supervisor).
	protocolVersion    = pb.Version_VERSION_1
	minProtocolVersion = pb.Version_VERSION_1

	// maxControlMsg bounds a message either way: output and input travel
	// in pieces of at most 32 KiB.
	maxControlMsg = 1 << 20
	// controlWriteTimeout drops a client that stops reading, so a stuck
	// client never stalls the container's output or its log.
	controlWriteTimeout = 5 * time.Second
)

// controlConn is one end of a control connection.
type controlConn struct {
	c   net.Conn
	r   *bufio.Reader
	wmu sync.Mutex // one message at a time: output streams write concurrently
}

func newControlConn(c net.Conn) *controlConn {
	return &controlConn{c: c, r: bufio.NewReader(c)}
}

// send writes m as one length-prefixed write, within controlWriteTimeout.
func (cc *controlConn) send(m proto.Message) error {
	data, err := proto.MarshalOptions{}.MarshalAppend(protowire.AppendVarint(nil, uint64(proto.Size(m))), m)
	if err != nil {
		return err
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	_ = cc.c.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	_, err = cc.c.Write(data)
	return err
}

func (cc *controlConn) recv(m proto.Message) error {
	return protodelim.UnmarshalOptions{MaxSize: maxControlMsg}.UnmarshalFrom(cc.r, m)
}

func (cc *controlConn) close() { cc.c.Close() }

// negotiated is the version both sides speak when one offers theirs to
// the other, and whether it is one this binary can speak.
func negotiated(theirs pb.Version) (pb.Version, bool) {
	v := min(theirs, protocolVersion)
	return v, v >= minProtocolVersion
}

// controlServer is the supervisor's side: it copies the container's output
// to every attached client and their input to the container's stdin, and
// reopens the log on request.
type controlServer struct {
	mu        sync.Mutex
	attached  map[*controlConn]bool
	stdin     io.WriteCloser // nil when the container has no stdin
	stdinOnce bool
	closed    bool     // stdin closed for good
	pty       *os.File // the pty master of a tty container
	logw      *criLog  // nil when the container has no log
	ln        net.Listener
}

// listenControl binds supervisor.sock in dir. The path is reached through
// a descriptor of dir, as a full state path may exceed the 108 bytes a
// socket address holds.
func listenControl(dir string, stdin io.WriteCloser, stdinOnce bool, pty *os.File, logw *criLog) (*controlServer, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ln, err := net.Listen("unix", "/proc/self/fd/"+strconv.Itoa(int(d.Fd()))+"/"+controlSocket)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &controlServer{attached: map[*controlConn]bool{}, stdin: stdin, stdinOnce: stdinOnce, pty: pty, logw: logw, ln: ln}
	go s.accept()
	return s, nil
}

func (s *controlServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serve(newControlConn(c))
	}
}

// serve answers one client's hello, then its requests until it goes away.
func (s *controlServer) serve(cc *controlConn) {
	defer s.drop(cc)
	var hello pb.Request
	if err := cc.recv(&hello); err != nil || hello.GetHello() == nil {
		return
	}
	v, ok := negotiated(hello.GetHello().GetVersion())
	if !ok {
		v = protocolVersion // the client sees it cannot speak ours
	}
	if cc.send(&pb.Reply{Reply: &pb.Reply_Hello{Hello: &pb.Hello{Version: v}}}) != nil || !ok {
		return
	}
	for {
		var req pb.Request
		if err := cc.recv(&req); err != nil {
			return
		}
		switch r := req.GetRequest().(type) {
		case *pb.Request_Attach:
			s.mu.Lock()
			s.attached[cc] = true
			s.mu.Unlock()
		case *pb.Request_Input:
			s.input(r.Input)
		case *pb.Request_CloseInput:
			s.endInput()
		case *pb.Request_Resize:
			if s.pty != nil {
				ws := &unix.Winsize{Col: uint16(r.Resize.GetWidth()), Row: uint16(r.Resize.GetHeight())}
				_ = unix.IoctlSetWinsize(int(s.pty.Fd()), unix.TIOCSWINSZ, ws)
			}
		case *pb.Request_ReopenLog:
			done := &pb.Done{}
			if s.logw != nil {
				if err := s.logw.reopen(); err != nil {
					klog.ErrorS(err, "Reopen container log")
					done.Failure = failureOf(fmt.Errorf("the log cannot be reopened: %v: %w", err, errdefs.ErrFailedPrecondition))
				}
			}
			if cc.send(&pb.Reply{Reply: &pb.Reply_Done{Done: done}}) != nil {
				return
			}
		}
	}
}

// input writes to the container's stdin, unless it has none or is closed.
func (s *controlServer) input(p []byte) {
	s.mu.Lock()
	in := s.stdin
	if s.closed {
		in = nil
	}
	s.mu.Unlock()
	if in != nil {
		if _, err := in.Write(p); err != nil {
			klog.V(2).InfoS("Attach: write to container stdin", "err", err)
		}
	}
}

// endInput closes the container's stdin when it is stdin_once: the first
// attached client that ends its input ends the container's. On a terminal
// that is an end-of-file character: the pty also carries the output.
func (s *controlServer) endInput() {
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

// drop ends a connection; an attached client that goes away has ended its
// input.
func (s *controlServer) drop(cc *controlConn) {
	s.mu.Lock()
	wasAttached := s.attached[cc]
	delete(s.attached, cc)
	s.mu.Unlock()
	cc.close()
	if wasAttached {
		s.endInput()
	}
}

// writer returns the sink of one output stream.
func (s *controlServer) writer(stream pb.Stream) io.Writer {
	return outputWriter{s: s, stream: stream}
}

type outputWriter struct {
	s      *controlServer
	stream pb.Stream
}

func (w outputWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	clients := make([]*controlConn, 0, len(w.s.attached))
	for cc := range w.s.attached {
		clients = append(clients, cc)
	}
	w.s.mu.Unlock()
	if len(clients) == 0 {
		return len(p), nil
	}
	out := &pb.Reply{Reply: &pb.Reply_Output{Output: &pb.Output{Stream: w.stream, Data: p}}}
	for _, cc := range clients {
		if err := cc.send(out); err != nil {
			w.s.drop(cc)
		}
	}
	return len(p), nil
}

// close ends every session: the container has exited.
func (s *controlServer) close() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for cc := range s.attached {
		cc.close()
	}
}

// dialSupervisor connects to the control socket of the container in dir
// and agrees on a version; the connection is closed when ctx ends. A
// supervisor that is gone (its container has exited) is
// ErrFailedPrecondition.
func dialSupervisor(ctx context.Context, id, dir string) (*controlConn, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(int(d.Fd()))+"/"+controlSocket)
	d.Close()
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("container %s is not running: %w", id, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("container %s: connect to its supervisor: %w", id, err)
	}
	cc := newControlConn(c)
	context.AfterFunc(ctx, cc.close)
	var hello pb.Reply
	err = cc.send(&pb.Request{Request: &pb.Request_Hello{Hello: &pb.Hello{Version: protocolVersion}}})
	if err == nil {
		err = cc.recv(&hello)
	}
	if err != nil {
		cc.close()
		return nil, fmt.Errorf("container %s: hello to its supervisor: %w", id, orCtxErr(ctx, err))
	}
	if _, ok := negotiated(hello.GetHello().GetVersion()); !ok {
		cc.close()
		return nil, fmt.Errorf("container %s: its supervisor speaks control protocol version %d and this daemon %d to %d: recreate the container: %w",
			id, hello.GetHello().GetVersion(), minProtocolVersion, protocolVersion, errdefs.ErrFailedPrecondition)
	}
	return cc, nil
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
	cc, err := dialSupervisor(ctx, id, dir)
	if err != nil {
		return err
	}
	defer cc.close()
	if err := cc.send(&pb.Request{Request: &pb.Request_Attach{Attach: &pb.Attach{}}}); err != nil {
		return fmt.Errorf("container %s: attach: %w", id, err)
	}
	if o.Stdin != nil {
		go sendInput(cc, o.Stdin)
	}
	if o.Resize != nil {
		go func() {
			for sz := range o.Resize {
				resize := &pb.Resize{Width: uint32(sz.Width), Height: uint32(sz.Height)}
				if cc.send(&pb.Request{Request: &pb.Request_Resize{Resize: resize}}) != nil {
					return
				}
			}
		}()
	}
	for {
		var m pb.Reply
		if err := cc.recv(&m); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("container %s: attach: %w", id, err)
		}
		var w io.Writer
		switch m.GetOutput().GetStream() {
		case pb.Stream_STREAM_STDOUT:
			w = o.Stdout
		case pb.Stream_STREAM_STDERR:
			w = o.Stderr
		}
		if w != nil {
			if _, err := w.Write(m.GetOutput().GetData()); err != nil {
				return nil // the client went away
			}
		}
	}
}

// sendInput sends what stdin gives, then the end of input.
func sendInput(cc *controlConn, stdin io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 && cc.send(&pb.Request{Request: &pb.Request_Input{Input: buf[:n]}}) != nil {
			return
		}
		if err != nil {
			_ = cc.send(&pb.Request{Request: &pb.Request_CloseInput{CloseInput: &pb.CloseInput{}}})
			return
		}
	}
}

// ReopenLog makes the supervisor start a new log file (after rotation):
// kubelet has renamed the old file and expects the new one when this
// returns, which is when the supervisor answers.
func (r *Runtime) ReopenLog(id string) error {
	dir, _, err := r.existing(id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), reopenTimeout)
	defer cancel()
	cc, err := dialSupervisor(ctx, id, dir)
	if err != nil {
		return err
	}
	defer cc.close()
	var m pb.Reply
	err = cc.send(&pb.Request{Request: &pb.Request_ReopenLog{ReopenLog: &pb.ReopenLog{}}})
	if err == nil {
		err = cc.recv(&m)
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("container %s: the supervisor did not reopen its log within %s: %w", id, reopenTimeout, errdefs.ErrDeadlineExceeded)
	case err != nil:
		return fmt.Errorf("container %s: reopen log: %w", id, err)
	case m.GetDone() == nil:
		return fmt.Errorf("container %s: reopen log: the supervisor answered %v", id, &m)
	case m.GetDone().GetFailure() != nil:
		return fmt.Errorf("container %s: %w", id, errorOf(m.GetDone().GetFailure()))
	}
	return nil
}

// reopenTimeout bounds the wait for a supervisor to reopen its log.
const reopenTimeout = 5 * time.Second
