package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// The daemon, the supervisor and the init talk over SOCK_SEQPACKET socket
// pairs: one JSON message per packet, with descriptors (a pty master) passed
// alongside. A closed peer reads as io.EOF, which every role treats as
// "give up": a daemon that dies during create takes the half-made container
// with it.

type syncMsg struct {
	Type  string `json:"type"` // pid, go, ready, error
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
	// Kind is the errdefs kind of Error, if it has one of errKinds: a
	// container the supervisor or the init finds at fault is refused
	// with the right code.
	Kind string `json:"kind,omitempty"`
}

// errKinds are the errdefs kinds a failure keeps across the socket.
var errKinds = []error{errdefs.ErrInvalidArgument, errdefs.ErrFailedPrecondition, errdefs.ErrNotFound}

// errorMsg is the message that reports err.
func errorMsg(err error) syncMsg {
	m := syncMsg{Type: msgError, Error: err.Error()}
	for _, k := range errKinds {
		if errors.Is(err, k) {
			m.Kind = k.Error()
		}
	}
	return m
}

// kindError is an error received over the socket, of the kind it was sent
// with.
type kindError struct {
	msg  string
	kind error
}

func (e kindError) Error() string { return e.msg }
func (e kindError) Unwrap() error { return e.kind }

const (
	msgPid   = "pid"
	msgGo    = "go"
	msgReady = "ready"
	msgError = "error"
)

// socketPair returns our end as a connection and the peer's end as a file
// to hand to a child through ExtraFiles.
func socketPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	c, err := fileConn(os.NewFile(uintptr(fds[0]), "sync"))
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return c, os.NewFile(uintptr(fds[1]), "sync-peer"), nil
}

// fileConn wraps an inherited socket descriptor (closing f).
func fileConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("sync socket is a %T", c)
	}
	return uc, nil
}

func sendMsg(c *net.UnixConn, m syncMsg, fds ...int) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(data, oob, nil); err != nil {
		return fmt.Errorf("send %s: %w", m.Type, err)
	}
	return nil
}

// recvMsg reads one message; an "error" message becomes the error.
func recvMsg(c *net.UnixConn) (syncMsg, []int, error) {
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return syncMsg{}, nil, err
	}
	if n == 0 {
		return syncMsg{}, nil, io.EOF
	}
	var fds []int
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, cm := range cmsgs {
				if rights, err := unix.ParseUnixRights(&cm); err == nil {
					fds = append(fds, rights...)
				}
			}
		}
	}
	var m syncMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return syncMsg{}, fds, fmt.Errorf("decode sync message: %w", err)
	}
	if m.Type == msgError {
		err := kindError{msg: m.Error}
		for _, k := range errKinds {
			if m.Kind == k.Error() {
				err.kind = k
			}
		}
		return m, fds, err
	}
	return m, fds, nil
}

// expectMsg reads one message and checks its type.
func expectMsg(c *net.UnixConn, typ string) (syncMsg, []int, error) {
	m, fds, err := recvMsg(c)
	if err != nil {
		return m, fds, err
	}
	if m.Type != typ {
		return m, fds, fmt.Errorf("sync: got %q, want %q", m.Type, typ)
	}
	return m, fds, nil
}
