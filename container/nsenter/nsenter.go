// Package nsenter joins a running container's namespaces before the Go
// runtime starts. setns into a mount namespace needs a single-threaded
// process, which a Go program never is once main runs; a C constructor runs
// earlier. Importing the package links the constructor in; it acts only when
// the process was started with _CRI_MINI_NSENTER_PID set (container exec).
//
// The constructor reads one byte from the descriptor in
// _CRI_MINI_NSENTER_SYNC (the go-ahead from the runtime, which joins the
// child to the container's cgroup later, right before it execs), joins the cgroup, ipc, uts, net, pid and mount namespaces of that
// pid, and forks once so that the child is inside the pid namespace. The
// child goes on to start Go; the parent waits for it and exits with its
// status (128+n when a signal n killed it), so its own parent sees the exact
// exit code. Failures are written to the descriptor in _CRI_MINI_NSENTER_ERR.
// The parent dies with the daemon (whose pid is _CRI_MINI_NSENTER_PPID) and
// the child with the parent (PR_SET_PDEATHSIG), so that an exec does not
// outlive the daemon that waits on it and enforces its timeout.
package nsenter

/*
#cgo CFLAGS: -Wall -Werror
extern void criMiniNsenter(void);
void __attribute__((constructor)) criMiniNsenterInit(void) { criMiniNsenter(); }
*/
import "C"
