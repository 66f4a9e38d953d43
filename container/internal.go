package container

import (
	"os"

	// The nsenter constructor must be linked into every binary that runs
	// the exec role: it joins the container's namespaces before Go starts.
	_ "github.com/cri-mini/cri-mini/container/nsenter"
)

// The binary re-executes itself (/proc/self/exe) for its internal roles; the
// role travels in the environment so that argv stays free for the process.
const (
	envRole     = "_CRI_MINI_ROLE"
	envStateDir = "_CRI_MINI_STATE"

	roleSupervisor = "supervisor"
	roleInit       = "init"
	roleExec       = "exec"
)

// RunInternal runs the internal role this process was re-executed for and
// does not return from it; it returns false for a normal start. Call it
// first in main (and in TestMain of tests that create containers).
func RunInternal() bool {
	switch os.Getenv(envRole) {
	case roleSupervisor:
		runSupervisor()
	case roleInit:
		runInit()
	case roleExec:
		runExec()
	default:
		return false
	}
	return true
}
