package container

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	pb "github.com/cri-mini/cri-mini/proto/supervisor/v1"
)

// The daemon, the supervisor and the init talk over SOCK_SEQPACKET socket
// pairs: one pb.Sync (the create handshake of proto/supervisor/v1) per
// packet, with descriptors (a pty master) passed alongside. A closed peer
// reads as io.EOF, which every role treats as "give up": a daemon that
// dies during create takes the half-made container with it.

// The steps of the handshake, as expectMsg names them.
const (
	msgPid     = "pid"
	msgGo      = "go"
	msgReady   = "ready"
	msgFailure = "failure"
)

// maxSyncMsg bounds one packet: a failure's message is the longest.
const maxSyncMsg = 1 << 16

func pidMsg(pid int) *pb.Sync {
	return &pb.Sync{Step: &pb.Sync_Pid{Pid: &pb.InitPid{Pid: int32(pid)}}}
}

func goMsg() *pb.Sync { return &pb.Sync{Step: &pb.Sync_Go{Go: &pb.Go{}}} }

func readyMsg(pid int) *pb.Sync {
	return &pb.Sync{Step: &pb.Sync_Ready{Ready: &pb.Ready{Pid: int32(pid)}}}
}

// errKinds are the errdefs kinds a failure keeps across the socket.
var errKinds = map[pb.ErrorKind]error{
	pb.ErrorKind_ERROR_KIND_INVALID_ARGUMENT:    errdefs.ErrInvalidArgument,
	pb.ErrorKind_ERROR_KIND_FAILED_PRECONDITION: errdefs.ErrFailedPrecondition,
	pb.ErrorKind_ERROR_KIND_NOT_FOUND:           errdefs.ErrNotFound,
}

// failureOf describes err with its errdefs kind, if it has one of errKinds.
func failureOf(err error) *pb.Failure {
	f := &pb.Failure{Message: err.Error()}
	for kind, e := range errKinds {
		if errors.Is(err, e) {
			f.Kind = kind
		}
	}
	return f
}

// errorMsg is the message that reports err.
func errorMsg(err error) *pb.Sync {
	return &pb.Sync{Step: &pb.Sync_Failure{Failure: failureOf(err)}}
}

// kindError is a failure received over a socket, of the kind it was sent
// with.
type kindError struct {
	msg  string
	kind error
}

func (e kindError) Error() string { return e.msg }
func (e kindError) Unwrap() error { return e.kind }

// errorOf is the error a received failure stands for.
func errorOf(f *pb.Failure) error {
	return kindError{msg: f.GetMessage(), kind: errKinds[f.GetKind()]}
}

// stepName names m's step as the msg constants do.
func stepName(m *pb.Sync) string {
	switch m.GetStep().(type) {
	case *pb.Sync_Pid:
		return msgPid
	case *pb.Sync_Go:
		return msgGo
	case *pb.Sync_Ready:
		return msgReady
	case *pb.Sync_Failure:
		return msgFailure
	}
	return "unknown"
}

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

func sendMsg(c *net.UnixConn, m *pb.Sync, fds ...int) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(data, oob, nil); err != nil {
		return fmt.Errorf("send %s: %w", stepName(m), err)
	}
	return nil
}

// recvMsg reads one message; a failure becomes the error.
func recvMsg(c *net.UnixConn) (*pb.Sync, []int, error) {
	buf := make([]byte, maxSyncMsg)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	if n == 0 {
		return nil, nil, io.EOF
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
	m := &pb.Sync{}
	if err := proto.Unmarshal(buf[:n], m); err != nil {
		return nil, fds, fmt.Errorf("decode sync message: %w", err)
	}
	if f := m.GetFailure(); f != nil {
		return m, fds, errorOf(f)
	}
	return m, fds, nil
}

// expectMsg reads one message and checks its step.
func expectMsg(c *net.UnixConn, step string) (*pb.Sync, []int, error) {
	m, fds, err := recvMsg(c)
	if err != nil {
		return m, fds, err
	}
	if got := stepName(m); got != step {
		return m, fds, fmt.Errorf("sync: got %q, want %q", got, step)
	}
	return m, fds, nil
}
