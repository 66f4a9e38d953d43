// Command cri-mini-shim is the small binary cri-mini starts for each
// container's supervisor (and, from it, the container's init), for each
// exec and for each pod's pause process. It holds only the container
// package and the pause's C constructor, so a supervisor maps a fraction of
// the daemon's code: its resident memory is the per-container overhead
// operators pay. The daemon runs it from one sealed in-memory copy. It is
// not meant to be run by hand; cri-mini finds it next to its own executable
// and falls back to re-executing itself without it.
package main

import (
	"fmt"
	"os"

	"github.com/cri-mini/cri-mini/container"
	// The pod pause process (a C constructor) runs from the same sealed
	// copy as the supervisors.
	_ "github.com/cri-mini/cri-mini/sandbox/pause"
)

func main() {
	if container.RunInternal() {
		return
	}
	fmt.Fprintln(os.Stderr, "cri-mini-shim: an internal helper of cri-mini, started by the daemon; not for use by hand")
	os.Exit(2)
}
