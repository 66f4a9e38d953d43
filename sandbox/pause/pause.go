// Package pause is the pod's pause process in C. A pod's shared pid
// namespace needs a PID 1 for its whole life (the namespace dies with its
// init, and only an init reaps orphans). Re-executing the Go daemon for that
// would cost a Go runtime per pod (about 20 MiB resident); a C constructor
// runs before the Go runtime starts and never returns, so the pause process
// stays well under 2 MiB.
//
// Importing the package links the constructor in; it acts only when the
// process was started with the environment variable Env set (to the pod id,
// which lets the daemon find its pause processes after a crash). Every
// container of the pod sees it as PID 1, so before anything else it confines
// itself as containerd and CRI-O confine theirs: it reads its Config from
// descriptor ConfigFD, pivots into an empty read-only tmpfs in its own mount
// namespace, drops every capability, takes the unprivileged uid and gid,
// sets no_new_privs, becomes not dumpable, loads the seccomp filter and
// closes every descriptor. A failure on the way is written to descriptor
// ErrFD, and the process exits; the end of ErrFD without a word means it is
// confined. Then it reaps every child that exits and ends on SIGTERM or
// SIGINT. The same constructor is the short-lived holder of a new pod's
// namespaces when HoldEnv is set instead.
package pause

/*
#cgo CFLAGS: -Wall -Werror
extern void criMiniPause(void);
void __attribute__((constructor)) criMiniPauseInit(void) { criMiniPause(); }
*/
import "C"

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Env marks a process as a pod's pause process; its value is the pod id.
const Env = "_CRI_MINI_POD_PAUSE"

// HoldEnv marks a process that only holds the namespaces it was born in
// until they are pinned: it exits at the end of its stdin. Its value is
// the pod id.
const HoldEnv = "_CRI_MINI_POD_HOLD"

// The descriptors the pause process reads its Config from and writes its
// setup failures to (CONFIG_FD and ERR_FD in pause.c).
const (
	ConfigFD = 3
	ErrFD    = 4
)

// Config is what the pause process is confined with.
type Config struct {
	UID, GID uint32
	// Filter is a compiled seccomp program (container/seccomp), loaded
	// without filter flags.
	Filter []unix.SockFilter
}

// Encode lays c out as pause.c's struct config: uid, gid, then the
// filter's instructions (struct sock_filter), in the host's byte order.
func (c Config) Encode() []byte {
	b := binary.NativeEndian.AppendUint32(nil, c.UID)
	b = binary.NativeEndian.AppendUint32(b, c.GID)
	for _, f := range c.Filter {
		b = binary.NativeEndian.AppendUint16(b, f.Code)
		b = append(b, f.Jt, f.Jf)
		b = binary.NativeEndian.AppendUint32(b, f.K)
	}
	return b
}
