package container

import (
	"fmt"
	"os"

	"github.com/cri-mini/cri-mini/internal/safeexec"

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
	role := os.Getenv(envRole)
	if role == roleSupervisor || role == roleInit || role == roleExec {
		// Each role enters a container or starts what does: a descriptor
		// inherited from whoever started the daemon (Go's os/exec passes
		// on all that are not close-on-exec) goes no further than this
		// process. Its own descriptors from 3 on are closed or marked
		// where it uses them.
		if err := safeexec.CloseOnExec(3); err != nil {
			fmt.Fprintf(os.Stderr, "cri-mini %s: %v\n", role, err)
			os.Exit(1)
		}
	}
	switch role {
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
