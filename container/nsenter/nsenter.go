// Package nsenter joins namespaces before the Go runtime starts. setns into
// a mount or user namespace needs a single-threaded process, which a Go
// program never is once main runs; a C constructor runs earlier. Importing
// the package links the constructor in; it acts only when the process was
// started with one of its two modes' environment.
//
// Exec (_CRI_MINI_NSENTER_PID, container exec): the constructor reads one
// byte from the descriptor in _CRI_MINI_NSENTER_SYNC (the go-ahead from the
// runtime, which joins the child to the container's cgroup later, right
// before it execs), joins the user namespace of that pid (when it is not
// its own; then it becomes root there) and then its cgroup, ipc, uts, net,
// pid and mount namespaces, and forks once so that the child is inside the
// pid namespace. The child goes on to start Go; the parent waits for it and
// exits with its status (128+n when a signal n killed it), so its own
// parent sees the exact exit code. Failures are written to the descriptor
// in _CRI_MINI_NSENTER_ERR. The parent dies with the daemon (whose pid is
// _CRI_MINI_NSENTER_PPID) and the child with the parent (PR_SET_PDEATHSIG),
// so that an exec does not outlive the daemon that waits on it and enforces
// its timeout.
//
// Init (_CRI_MINI_NSINIT, the clone flags of the new namespaces): the
// supervisor starts a container's init this way. The constructor joins the
// namespaces of the descriptors listed in _CRI_MINI_NSINIT_JOIN, a user
// namespace first (and becomes root there), unshares the new ones (owned
// by that user namespace) and forks the init into them; it writes the
// init's pid, or its failure, to the descriptor in _CRI_MINI_NSINIT_REPORT
// and exits, and the supervisor adopts the init.
package nsenter

/*
#cgo CFLAGS: -Wall -Werror
extern void criMiniNsenter(void);
void __attribute__((constructor)) criMiniNsenterInit(void) { criMiniNsenter(); }
*/
import "C"
