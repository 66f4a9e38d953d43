// Command nnp is the program of cri-mini's offline nonewprivs test image. It
// is installed setuid root and prints the effective user ID it runs with: 0
// when the setuid bit took effect, the caller's when no_new_privs blocked it.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
