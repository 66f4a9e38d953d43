package image

import (
	"archive/tar"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
	"github.com/cri-mini/cri-mini/internal/treetest"
)

// idmapHost is the host's uid and gid of the test user namespace's root.
const idmapHost = 0x10000 * 3200

// testUserNS starts a process in a new user namespace mapping 65536 ids
// from idmapHost and returns its namespace file.
func testUserNS(t *testing.T) string {
	t.Helper()
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: idmapHost, Size: 65536}}
	holder := exec.Command("sleep", "600")
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER, UidMappings: m, GidMappings: m}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	return fmt.Sprintf("/proc/%d/ns/user", holder.Process.Pid)
}

// asUser runs a shell command as uid and gid id (the mapped root, as the
// container's processes are on the host).
func asUser(t *testing.T, id int, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(id), Gid: uint32(id)}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s as %d: %v: %s", script, id, err, out)
	}
}

// TestIdmappedRootfs: with an IDMap the image's files show, through the
// root file system, as the user namespace's (uid 0 on disk is the mapped
// root, 1000 the mapped 1000), the writable layer and what the container
// writes there (new files, copies up of the image's) belong to the mapped
// root on the host, an image VOLUME's directory too, an image volume is
// idmapped alike, and the shared layers are byte for byte and owner for
// owner what they were.
func TestIdmappedRootfs(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	user := entry{name: "home/app/data", body: "app's", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1000}
	reg.push(t, "idmap:1", withVolumes(t, imageOf(t, layer(t, dir("etc"), file("etc/passwd", "root:x:0:0::/:/bin/sh\n"),
		dir("home"), entry{name: "home/app", typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000}, user)), "/data"))
	s := openStore(t, reg, Options{})
	id := pull(t, s, reg.host+"/idmap:1").ID
	layers := filepath.Join(s.root, "layers")
	before := sha256.Sum256([]byte(treetest.Describe(t, layers)))

	idmap := &IDMap{UserNS: testUserNS(t), UID: idmapHost, GID: idmapHost}
	root := t.TempDir()
	if err := s.PrepareRootfs("ctr-idmap", id, root, idmap); err != nil {
		t.Fatalf("PrepareRootfs: %v", err)
	}
	t.Cleanup(func() {
		if err := s.ReleaseRootfs("ctr-idmap", root); err != nil {
			t.Errorf("ReleaseRootfs: %v", err)
		}
		assertNotMounted(t, root)
	})
	rootID, appID := fmt.Sprintf("%d:%d", idmapHost, idmapHost), fmt.Sprintf("%d:%d", idmapHost+1000, idmapHost+1000)
	for path, want := range map[string]string{"": rootID, "etc/passwd": rootID, "home/app/data": appID, "data": rootID} {
		if got := treetest.Owner(t, filepath.Join(root, path)); got != want {
			t.Errorf("/%s owned by %s through the rootfs, want %s", path, got, want)
		}
	}
	// The container's root writes as the mapped root: a new file, and a
	// change to the image's file, copied up into the writable layer. (It
	// must reach the rootfs: the test's directories are the host root's.)
	if err := os.Chmod(filepath.Dir(root), 0o755); err != nil {
		t.Fatal(err)
	}
	asUser(t, idmapHost, fmt.Sprintf("echo new > %s/new && echo more >> %s/etc/passwd", root, root))
	upper := filepath.Join(s.containerDir("ctr-idmap"), "upper")
	for _, path := range []string{"", "new", "etc/passwd"} {
		if got := treetest.Owner(t, filepath.Join(upper, path)); got != rootID {
			t.Errorf("writable layer /%s owned by %s on disk, want the mapped root %s", path, got, rootID)
		}
	}

	vol := t.TempDir()
	if err := s.MountImage("ctr-idmap.vol0", id, vol, idmap); err != nil {
		t.Fatalf("MountImage: %v", err)
	}
	if got := treetest.Owner(t, filepath.Join(vol, "home/app/data")); got != appID {
		t.Errorf("image volume file owned by %s, want %s", got, appID)
	}
	if err := s.ReleaseRootfs("ctr-idmap.vol0", vol); err != nil {
		t.Fatal(err)
	}
	if after := sha256.Sum256([]byte(treetest.Describe(t, layers))); after != before {
		t.Errorf("the shared layers changed: %x, were %x\n%s", after, before, treetest.Describe(t, layers))
	}
}

// TestIdmapNeedsAFileSystemThatCan: a store on a file system without
// idmapped mounts (ramfs) refuses an idmapped root file system with
// FailedPrecondition naming the reason, and keeps nothing of it.
func TestIdmapNeedsAFileSystemThatCan(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "idmap:2", imageOf(t, layer(t, file("f", "x"))))
	dir := t.TempDir()
	if err := unix.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		t.Skipf("ramfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	s, err := Open(dir, Options{InsecureRegistries: []string{reg.host}, Keychain: noKeychain{}})
	if err != nil {
		t.Fatal(err)
	}
	id := pull(t, s, reg.host+"/idmap:2").ID
	root := t.TempDir()
	err = s.PrepareRootfs("ctr-ramfs", id, root, &IDMap{UserNS: testUserNS(t), UID: idmapHost, GID: idmapHost})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(fmt.Sprint(err), "cannot be idmapped") {
		t.Fatalf("PrepareRootfs on ramfs: %v, want FailedPrecondition", err)
	}
	assertNotMounted(t, root)
	if _, err := os.Stat(s.containerDir("ctr-ramfs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused rootfs left %s: %v", s.containerDir("ctr-ramfs"), err)
	}
}
