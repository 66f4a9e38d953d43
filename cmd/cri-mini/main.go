// Command cri-mini is a Kubernetes container runtime: it serves the CRI on a
// unix socket and builds every container itself with system calls.
package main

import (
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Printf("cri-mini %s\n", version)
		return
	}
	fmt.Fprintln(os.Stderr, "cri-mini: the daemon is not built yet; try `cri-mini version`")
	os.Exit(2)
}
