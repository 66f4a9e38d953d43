// Package nstest holds test helpers about namespaces.
package nstest

import (
	"os"
	"testing"
)

// Same reports whether paths a and b name one namespace: /proc/PID/ns/*
// links and the files namespaces are pinned to (or any two files).
func Same(t testing.TB, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}
