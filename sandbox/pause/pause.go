// Package pause is the pod's pause process in C. A pod's shared pid
// namespace needs a PID 1 for its whole life (the namespace dies with its
// init, and only an init reaps orphans). Re-executing the Go daemon for that
// would cost a Go runtime per pod (about 20 MiB resident); a C constructor
// runs before the Go runtime starts and never returns, so the pause process
// stays well under 1 MiB.
//
// Importing the package links the constructor in; it acts only when the
// process was started with the environment variable Env set (to the pod id,
// which lets the daemon find its pause processes after a crash). It reaps
// every child that exits and ends on SIGTERM or SIGINT.
package pause

/*
#cgo CFLAGS: -Wall -Werror
extern void criMiniPause(void);
void __attribute__((constructor)) criMiniPauseInit(void) { criMiniPause(); }
*/
import "C"

// Env marks a process as a pod's pause process; its value is the pod id.
const Env = "_CRI_MINI_POD_PAUSE"
