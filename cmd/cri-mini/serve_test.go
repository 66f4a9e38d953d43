package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenUnixReplacesOnlyAStaleSocket: --listen naming a regular file,
// a directory or a symlink fails naming the path and leaves it alone; a
// live socket (another daemon) is an error; a socket nobody answers on is
// replaced.
func TestListenUnixReplacesOnlyAStaleSocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "precious")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir.sock")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{file: "a regular file", link: "a symlink", sub: "a directory"} {
		ln, err := listenUnix(path)
		if err == nil {
			ln.Close()
			t.Errorf("%s: listening on %s replaced it", path, kind)
			continue
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), kind) {
			t.Errorf("%s: %v, want an error naming the path and %q", path, err, kind)
		}
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != "keep me" {
		t.Errorf("the regular file changed: %q %v", data, err)
	}
	if st, err := os.Lstat(sub); err != nil || !st.IsDir() {
		t.Errorf("the directory changed: %v", err)
	}

	live := filepath.Join(dir, "live.sock")
	other, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if ln, err := listenUnix(live); err == nil {
		ln.Close()
		t.Error("took over the socket of a live listener")
	} else if !strings.Contains(err.Error(), "serves on this socket") {
		t.Errorf("live socket: %v", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	old, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false) // as a killed daemon leaves it
	old.Close()
	ln, err := listenUnix(stale)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
}
