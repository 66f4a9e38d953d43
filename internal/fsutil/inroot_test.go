package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// hostileRoot is an image root whose files the runtime reads are not
// regular files: a FIFO (an open for reading would wait for a writer
// forever), a character device like /dev/zero (endless), a directory, a
// file over the cap, and a symlink out of the root.
func hostileRoot(t *testing.T) (root string, outside string) {
	t.Helper()
	root = t.TempDir()
	outside = filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("host:x:0:0::/:/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(root, "etc")
	must(t, os.MkdirAll(filepath.Join(etc, "dir"), 0o755))
	must(t, unix.Mkfifo(filepath.Join(etc, "fifo"), 0o644))
	if os.Geteuid() == 0 {
		must(t, unix.Mknod(filepath.Join(etc, "zero"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))))
	}
	must(t, os.WriteFile(filepath.Join(etc, "big"), make([]byte, 1025), 0o644))
	must(t, os.WriteFile(filepath.Join(etc, "small"), []byte("ok\n"), 0o644))
	must(t, os.Symlink("../../../../../../../../"+outside, filepath.Join(etc, "escape")))
	must(t, os.Symlink("/etc/small", filepath.Join(etc, "inside")))
	return root, outside
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadFileInRootRefusesWhatIsNotARegularFile(t *testing.T) {
	root, _ := hostileRoot(t)
	for _, tc := range []struct{ file, want string }{
		{"etc/fifo", "a FIFO"},
		{"etc/zero", "a character device"},
		{"etc/dir", "a directory"},
		{"etc/big", "larger than 1024 bytes"},
	} {
		if tc.file == "etc/zero" && os.Geteuid() != 0 {
			continue // mknod of a device needs root
		}
		_, err := ReadFileInRoot(root, tc.file, 1024)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want InvalidArgument saying %q", tc.file, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), root) {
			t.Errorf("%s: the error names the host path of the root: %v", tc.file, err)
		}
	}
	if data, err := ReadFileInRoot(root, "/etc/inside", 1024); err != nil || string(data) != "ok\n" {
		t.Errorf("a symlink inside the root: %q %v", data, err)
	}
	// The symlink's target is resolved in the root, where it does not exist.
	if _, err := ReadFileInRoot(root, "etc/escape", 1024); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a symlink out of the root: %v, want not found", err)
	}
	if _, err := ReadFileInRoot(root, "etc/missing", 1024); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v, want not found", err)
	}
}

func TestReadRegularFile(t *testing.T) {
	root, outside := hostileRoot(t)
	if data, err := ReadRegularFile(outside, 1024); err != nil || !strings.HasPrefix(string(data), "host:") {
		t.Errorf("a plain file: %q %v", data, err)
	}
	for _, name := range []string{"fifo", "dir", "big"} {
		p := filepath.Join(root, "etc", name)
		if _, err := ReadRegularFile(p, 1024); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestOpenBeneathFollowsNoSymlink(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "target")
	must(t, os.WriteFile(outside, []byte("untouched"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "ctr"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(dir, "ctr", "0.log")))
	must(t, os.Symlink(filepath.Dir(outside), filepath.Join(dir, "link")))
	must(t, unix.Mkfifo(filepath.Join(dir, "ctr", "fifo.log"), 0o600))
	const flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND

	for _, rel := range []string{"ctr/0.log", "link/target", "link/new", "../x.log", "/abs.log", "ctr/fifo.log"} {
		f, err := OpenBeneath(dir, rel, flags, 0o640)
		if err == nil {
			f.Close()
			t.Errorf("%s: opened", rel)
		} else if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", rel, err)
		}
	}
	if data, _ := os.ReadFile(outside); string(data) != "untouched" {
		t.Errorf("the symlink target changed: %q", data)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(outside), "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was created through the symlinked directory: %v", err)
	}
	f, err := OpenBeneath(dir, "ctr/1.log", flags, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := os.Lstat(filepath.Join(dir, "ctr", "1.log")); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o640 {
		t.Errorf("created log: %v %v", st, err)
	}
}

func TestMkdirAllBeneath(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	must(t, os.Symlink(outside, filepath.Join(dir, "evil")))
	if err := MkdirAllBeneath(dir, "evil/sub", 0o755); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("through a symlink: %v, want InvalidArgument", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("a directory was made through the symlink: %v", entries)
	}
	if err := MkdirAllBeneath(dir, "../up", 0o755); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("leaving the directory: %v", err)
	}
	if err := MkdirAllBeneath(dir, "a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAllBeneath(dir, "a/b", 0o755); err != nil {
		t.Errorf("again: %v", err)
	}
	if st, err := os.Stat(filepath.Join(dir, "a", "b", "c")); err != nil || !st.IsDir() {
		t.Errorf("made: %v %v", st, err)
	}
}
