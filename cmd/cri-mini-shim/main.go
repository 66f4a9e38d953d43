// Command cri-mini-shim is the small binary cri-mini starts for each
// container's supervisor (and, from it, the container's init). It holds
// only the container package, so a supervisor maps a fraction of the
// daemon's code: its resident memory is the per-container overhead
// operators pay. It is not meant to be run by hand; cri-mini finds it next
// to its own executable and falls back to re-executing itself without it.
package main

import (
	"fmt"
	"os"

	"github.com/cri-mini/cri-mini/container"
)

func main() {
	if container.RunInternal() {
		return
	}
	fmt.Fprintln(os.Stderr, "cri-mini-shim: an internal helper of cri-mini, started by the daemon; not for use by hand")
	os.Exit(2)
}
