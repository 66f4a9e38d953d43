// Package roottest lets a test that needs root (namespaces, mounts,
// cgroups, chown, capabilities) skip cleanly in the quick loop (make unit:
// go test -short) and when not run as root.
package roottest

import (
	"os"
	"testing"
)

// Require skips the test under -short or without root.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs root: skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}
