package mountfd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// TestMain skips every test but as root: each one mounts.
func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("skipped: the mount API needs root")
		return
	}
	m.Run()
}

// writable reports whether a file can be made in dir, failing the test on
// any error but EROFS.
func writable(t *testing.T, dir, name string) bool {
	t.Helper()
	err := os.WriteFile(filepath.Join(dir, name), nil, 0o644)
	if err != nil && !errors.Is(err, unix.EROFS) {
		t.Fatal(err)
	}
	return err == nil
}

// mountpoint returns a fresh directory that is unmounted (every mount
// stacked on it) when the test ends.
func mountpoint(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for unix.Unmount(dir, unix.MNT_DETACH) == nil {
		}
	})
	return dir
}

// moved attaches the detached mount mfd at a fresh mountpoint and returns it.
func moved(t *testing.T, mfd int) string {
	t.Helper()
	dir := mountpoint(t)
	if err := MoveTo(mfd, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func tmpfs(t *testing.T, params ...string) int {
	t.Helper()
	mfd, err := New("tmpfs", "test", params, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(mfd) })
	return mfd
}

func fsType(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type
}

func TestNew(t *testing.T) {
	dir := moved(t, tmpfs(t, "mode=701", "size=1m"))
	if got := fsType(t, dir); got != unix.TMPFS_MAGIC {
		t.Fatalf("%s is file system %#x, want tmpfs", dir, got)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o701 {
		t.Errorf("mode=701 gave %v", fi.Mode())
	}
}

func TestNewFailures(t *testing.T) {
	for _, tc := range []struct {
		fstype string
		params []string
		want   string
		errno  syscall.Errno
	}{
		{"no-such-fs", nil, "fsopen no-such-fs", unix.ENODEV},
		{"tmpfs", []string{"size=lots"}, "fsconfig tmpfs size=lots", unix.EINVAL},
		{"tmpfs", []string{"nosuchflag"}, "fsconfig tmpfs nosuchflag", unix.EINVAL},
	} {
		_, err := New(tc.fstype, "", tc.params, 0)
		if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s, %v): %v, want %q wrapping %v", tc.fstype, tc.params, err, tc.want, tc.errno)
		}
	}
}

func TestFSMountAttributes(t *testing.T) {
	fs, err := Open("tmpfs")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if err := fs.Param("size=1m"); err != nil {
		t.Fatal(err)
	}
	mfd, err := fs.Mount(unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	dir := moved(t, mfd)
	if writable(t, dir, "f") {
		t.Error("a MOUNT_ATTR_RDONLY mount is writable")
	}
}

func TestCloneAttachSetAttr(t *testing.T) {
	src := moved(t, tmpfs(t))
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mfd, err := Clone(src, false)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	if err := SetAttr(mfd, unix.MOUNT_ATTR_RDONLY, 0, 0, false); err != nil {
		t.Fatal(err)
	}
	dst := mountpoint(t)
	target, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := Attach(mfd, target); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(data) != "x" {
		t.Fatalf("the bind shows %q, %v", data, err)
	}
	if writable(t, dst, "g") || !writable(t, src, "g") {
		t.Error("SetAttr(MOUNT_ATTR_RDONLY) on the bind: want it, not its source, read-only")
	}

	// A copy of a copy, by descriptor, keeps the attribute (target holds
	// the directory below the bind: open the bind itself).
	bind, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer bind.Close()
	again, err := CloneFD(bind, false)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(again)
	dst2 := moved(t, again)
	if writable(t, dst2, "h") {
		t.Error("the copy of the read-only bind is writable")
	}

	// SetAttrAt clears it again, by path.
	if err := SetAttrAt(dst2, 0, unix.MOUNT_ATTR_RDONLY, 0, false); err != nil {
		t.Fatal(err)
	}
	if !writable(t, dst2, "h") {
		t.Error("still read-only after clearing MOUNT_ATTR_RDONLY")
	}
}

func TestCloneRecursive(t *testing.T) {
	src := moved(t, tmpfs(t))
	sub := filepath.Join(src, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MoveTo(tmpfs(t, "mode=700"), sub); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(sub, unix.MNT_DETACH) })
	for _, recursive := range []bool{false, true} {
		mfd, err := Clone(src, recursive)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(mfd)
		fi, err := os.Stat(filepath.Join(moved(t, mfd), "sub"))
		if err != nil {
			t.Fatal(err)
		}
		// The submount's root is 0700; the directory below it 0755.
		if got := fi.Mode().Perm() == 0o700; got != recursive {
			t.Errorf("Clone(recursive=%v): the submount is there: %v", recursive, got)
		}
	}
}

func TestSyscallFailures(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := Clone(missing, false); !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "open_tree "+missing) {
		t.Errorf("Clone of a missing path: %v", err)
	}
	mfd := tmpfs(t)
	if err := MoveTo(mfd, missing); !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "move_mount to "+missing) {
		t.Errorf("MoveTo a missing path: %v", err)
	}
	if err := SetAttr(mfd, 0, 0, 12345, false); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "mount_setattr") {
		t.Errorf("SetAttr with a bad propagation: %v", err)
	}
	// Nothing to change makes no system call: not even a bad descriptor fails.
	if err := SetAttr(-1, 0, 0, 0, true); err != nil {
		t.Errorf("SetAttr with nothing to change: %v", err)
	}
}

// userNS starts a process in a new user namespace that maps ids 0-65535 to
// host ids from 100000 and returns that namespace.
func userNS(t *testing.T) *os.File {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER, UidMappings: m, GidMappings: m}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	f, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestIdmap(t *testing.T) {
	ns := userNS(t)
	src := moved(t, tmpfs(t))
	if err := os.WriteFile(filepath.Join(src, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mfd, err := Clone(src, false)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	if err := Idmap(mfd, ns, false); err != nil {
		t.Fatal(err)
	}
	dst := moved(t, mfd)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 100000 || st.Gid != 100000 {
		t.Errorf("root's file shows as %d:%d through the idmapped mount, want 100000:100000", st.Uid, st.Gid)
	}

	// An attached mount cannot be idmapped, and that is the caller's fault,
	// not the file system's.
	err = Idmap(mfd, ns, false)
	if err == nil || errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "idmapped mount") {
		t.Errorf("Idmap of an attached mount: %v, want an error other than FailedPrecondition", err)
	}
}

func TestIdmapUnsupportedFileSystem(t *testing.T) {
	ns := userNS(t)
	mfd, err := New("ramfs", "", nil, 0)
	if err != nil {
		t.Skipf("ramfs: %v", err)
	}
	defer unix.Close(mfd)
	if err := Idmap(mfd, ns, false); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "cannot be idmapped") {
		t.Errorf("Idmap of ramfs: %v, want FailedPrecondition", err)
	}
}
