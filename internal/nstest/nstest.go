// Package nstest holds test helpers about namespaces.
package nstest

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
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

// Inode returns the inode number of the file at path: for a namespace
// file, the namespace's identity (as in user:[4026531837]).
func Inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// Owner returns the inode number of the user namespace that owns the
// namespace at path (ioctl NS_GET_USERNS).
func Owner(t testing.TB, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatalf("NS_GET_USERNS %s: %v", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
