package image

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/roottest"
	"github.com/cri-mini/cri-mini/internal/treetest"
)

// kernels are the ways overlayfs takes layers, newest first, as
// overlayWays turns them on: on this host a test takes each.
var kernels = []struct {
	name             string
	fd, layerByLayer bool
}{
	{"6.13-by-descriptor", true, true},
	{"6.8-one-by-one-by-path", false, true},
	{"before-6.8-one-list", false, false},
}

// asKernel makes mountOverlay and mountIdmappedOverlay take only the ways
// of an older kernel until the test ends.
func asKernel(t *testing.T, fd, layerByLayer bool) {
	t.Helper()
	saved := overlayWays
	overlayWays.layerFD, overlayWays.layerByLayer = fd, layerByLayer
	t.Cleanup(func() { overlayWays = saved })
}

// mountsBelow lists the mount points at or below dir.
func mountsBelow(t *testing.T, dir string) []string {
	t.Helper()
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	var below []string
	for _, m := range mounts {
		if m.Mountpoint == dir || strings.HasPrefix(m.Mountpoint, dir+"/") {
			below = append(below, m.Mountpoint)
		}
	}
	return below
}

// manyLayers pushes repo:1, an image of n layers: layer i has the file
// l<i>, and each writes "top" with its number, so the last one's shows.
func manyLayers(t *testing.T, reg *testRegistry, repo string, n int) {
	t.Helper()
	layers := make([]v1.Layer, n)
	for i := range layers {
		layers[i] = layer(t, file(fmt.Sprintf("l%d", i), "x"), file("top", fmt.Sprint(i)))
	}
	reg.push(t, repo+":1", imageOf(t, layers...))
}

// assertLayers fails unless root shows every layer of a manyLayers image
// of n layers, the last on top.
func assertLayers(t *testing.T, root string, n int) {
	t.Helper()
	for _, i := range []int{0, n / 2, n - 1} {
		if _, err := os.Stat(filepath.Join(root, fmt.Sprintf("l%d", i))); err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
	}
	if data, err := os.ReadFile(filepath.Join(root, "top")); err != nil || string(data) != fmt.Sprint(n-1) {
		t.Errorf("/top is %q (%v), want the last layer's %d", data, err, n-1)
	}
}

// TestIdmappedRootfsOnOlderKernels: on each kernel's way (by descriptor;
// attached by path, one by one or as one list) a user-namespaced root file
// system and image volume show the image's files as the mapped ids, the
// container's writes (a copy up of the image's file too) land as the
// mapped root, no idmapped layer stays attached once they are mounted
// (overlayfs holds its own), and release leaves no mount.
func TestIdmappedRootfsOnOlderKernels(t *testing.T) {
	for _, k := range kernels {
		t.Run(k.name, func(t *testing.T) {
			asKernel(t, k.fd, k.layerByLayer)
			c := newContainerFSTest(t)
			layers := filepath.Join(c.s.root, "layers")
			before := treetest.Describe(t, layers)
			idmap := &IDMap{UserNS: testUserNS(t), UID: idmapHost, GID: idmapHost}
			got, err := c.fs.Prepare("ctr", FSSpec{Image: c.app, IDMap: idmap, Volumes: []VolumeSpec{{Image: c.vol, IDMap: idmap}}})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			t.Cleanup(func() { _ = c.fs.Release("ctr") }) // should the test stop half way
			if left := mountsBelow(t, filepath.Join(c.s.root, "containers")); len(left) != 0 {
				t.Errorf("mounts left in the store once the rootfs is made: %v", left)
			}
			mapped := fmt.Sprintf("%d:%d", idmapHost, idmapHost)
			for _, p := range []string{filepath.Join(got.Rootfs, "etc/app"), filepath.Join(got.Volumes[0].Path, "data")} {
				if owner := treetest.Owner(t, p); owner != mapped {
					t.Errorf("%s owned by %s, want %s", p, owner, mapped)
				}
			}
			for _, d := range []string{c.dir, filepath.Dir(c.dir)} { // for the mapped root to reach the rootfs
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			asUser(t, idmapHost, fmt.Sprintf("cat %s/etc/app >/dev/null && echo more >> %s/etc/app && echo new > %s/new", got.Rootfs, got.Rootfs, got.Rootfs))
			upper := filepath.Join(c.s.containerDir("ctr"), "upper")
			for _, p := range []string{"etc/app", "new"} {
				if owner := treetest.Owner(t, filepath.Join(upper, p)); owner != mapped {
					t.Errorf("writable layer's /%s owned by %s, want %s", p, owner, mapped)
				}
			}
			if err := c.fs.Release("ctr"); err != nil {
				t.Fatal(err)
			}
			c.assertNothingOf(t, "ctr")
			if left := slices.Concat(mountsBelow(t, c.s.root), mountsBelow(t, c.dir)); len(left) != 0 {
				t.Errorf("mounts left after release: %v", left)
			}
			if after := treetest.Describe(t, layers); after != before {
				t.Error("the shared layers changed")
			}
		})
	}
}

// TestIdmappedLayersFailureHalfWay: an overlay that cannot be made of the
// attached idmapped layers (its mount point is gone) leaves none attached.
func TestIdmappedLayersFailureHalfWay(t *testing.T) {
	asKernel(t, false, false)
	c := newContainerFSTest(t)
	img, err := c.s.Get(c.app)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := os.Open(testUserNS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	attach := filepath.Join(t.TempDir(), "lower")
	err = mountIdmappedOverlay([]string{c.s.layerDir(img.Layers[0]), t.TempDir()}, "", "", filepath.Join(c.dir, "gone"), ns, attach)
	if err == nil {
		t.Fatal("an overlay onto a missing mount point was made")
	}
	if left := mountsBelow(t, filepath.Dir(attach)); len(left) != 0 {
		t.Errorf("layers left attached: %v", left)
	}
	if _, err := os.Stat(attach); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", attach, err)
	}
}

// TestIdmappedLayersCrash: a process that dies with the idmapped layers of
// a rootfs still attached (the overlay made, not yet detached) leaves them
// for the next start: CollectOrphans detaches them, releases the rootfs
// and leaves the shared layers as they were.
func TestIdmappedLayersCrash(t *testing.T) {
	roottest.Require(t)
	if root := os.Getenv("IMAGE_TEST_CRASH_ROOT"); root != "" {
		asKernel(t, false, false)
		s, err := Open(root, Options{})
		if err != nil {
			t.Fatal(err)
		}
		layersAttached = func() { os.Exit(3) } // a crash: no defer runs
		_, err = NewContainerFS(s, os.Getenv("IMAGE_TEST_CRASH_DIR")).Prepare("crashed", FSSpec{Image: os.Getenv("IMAGE_TEST_CRASH_IMAGE"),
			IDMap: &IDMap{UserNS: os.Getenv("IMAGE_TEST_CRASH_USERNS"), UID: idmapHost, GID: idmapHost}})
		t.Fatalf("Prepare returned (%v): the hook was to end the process", err)
	}
	c := newContainerFSTest(t)
	layers := filepath.Join(c.s.root, "layers")
	before := sha256.Sum256([]byte(treetest.Describe(t, layers)))
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdmappedLayersCrash$")
	cmd.Env = append(os.Environ(), "IMAGE_TEST_CRASH_ROOT="+c.s.root, "IMAGE_TEST_CRASH_DIR="+c.dir,
		"IMAGE_TEST_CRASH_IMAGE="+c.app, "IMAGE_TEST_CRASH_USERNS="+testUserNS(t))
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("the crashing process: %v (exit %d): %s", err, code, out)
	}
	attached := mountsBelow(t, filepath.Join(c.s.containerDir("crashed"), "lower"))
	if len(attached) == 0 {
		t.Fatal("the crash left no idmapped layer attached: the test tests nothing")
	}
	t.Cleanup(func() { // should the collection fail
		for _, m := range slices.Concat(mountsBelow(t, c.s.root), mountsBelow(t, c.dir)) {
			_ = exec.Command("umount", "-l", m).Run()
		}
	})

	if released := c.fs.CollectOrphans(func(string) bool { return false }); !slices.Equal(released, []string{"crashed"}) {
		t.Errorf("released %v, want [crashed]", released)
	}
	c.assertNothingOf(t, "crashed")
	c.assertEmpty(t)
	if left := slices.Concat(mountsBelow(t, c.s.root), mountsBelow(t, c.dir)); len(left) != 0 {
		t.Errorf("mounts left after the collection: %v", left)
	}
	if after := sha256.Sum256([]byte(treetest.Describe(t, layers))); after != before {
		t.Error("the shared layers changed")
	}
}

// TestManyLayersOnOlderKernels: where overlayfs takes the layers only as
// one list (before Linux 6.8), an image whose list of full paths is longer
// than mount(2)'s page of options still mounts (the paths relative to the
// layers' directory), idmapped too, and one whose list does not fit even
// so is copied; every kernel's way mounts them all.
func TestManyLayersOnOlderKernels(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	const fits, tooMany = 50, 90
	manyLayers(t, reg, "three", 3)
	manyLayers(t, reg, "fifty", fits)
	manyLayers(t, reg, "ninety", tooMany)
	s := openStore(t, reg, Options{})
	three := pull(t, s, reg.host+"/three:1")
	fifty := pull(t, s, reg.host+"/fifty:1")
	ninety := pull(t, s, reg.host+"/ninety:1")
	// The test means something only where the full paths overflow: three
	// layers what fsconfig takes as a value (255 bytes: Linux 6.1 refused
	// the list of e2e's hostile-symlinks image so), fifty mount(2)'s page.
	if full := len(strings.Join(layerPaths(s, three), ":")); full <= 255 {
		t.Fatalf("3 layers take %d bytes, not more than fsconfig takes", full)
	}
	if full := len(strings.Join(layerPaths(s, fifty), ":")); full < os.Getpagesize() {
		t.Fatalf("%d layers take %d bytes, less than a page", fits, full)
	}
	userNS := testUserNS(t)
	byLayer := takesLayerByLayer(t)
	for _, k := range kernels {
		t.Run(k.name, func(t *testing.T) {
			asKernel(t, k.fd, k.layerByLayer)
			for _, img := range []*Image{three, fifty, ninety} {
				n := len(img.Layers)
				for _, idmap := range []*IDMap{nil, {UserNS: userNS, UID: idmapHost, GID: idmapHost}} {
					id := fmt.Sprintf("ctr-%d-%v", n, idmap != nil)
					root := t.TempDir()
					if err := s.PrepareRootfs(id, img.ID, root, idmap); err != nil {
						t.Fatalf("%d layers, idmapped %v: %v", n, idmap != nil, err)
					}
					assertLayers(t, root, n)
					_, copied := os.Stat(filepath.Join(s.containerDir(id), "copy"))
					// Only the list of ninety full paths, relative too, is too long.
					if wantCopy := n == tooMany && !(k.layerByLayer && byLayer) && idmap == nil; (copied == nil) != wantCopy {
						t.Errorf("%d layers, idmapped %v: copied %v, want %v", n, idmap != nil, copied == nil, wantCopy)
					}
					if err := s.ReleaseRootfs(id, root); err != nil {
						t.Fatal(err)
					}
					if left := slices.Concat(mountsBelow(t, root), mountsBelow(t, s.root)); len(left) != 0 {
						t.Errorf("mounts left: %v", left)
					}
				}
			}
		})
	}
}

// layerPaths are the directories of img's layers.
func layerPaths(s *Store, img *Image) []string {
	var paths []string
	for _, l := range img.Layers {
		paths = append(paths, s.layerDir(l))
	}
	return paths
}

// takesLayerByLayer reports whether this kernel's overlayfs takes
// "lowerdir+" (Linux 6.8).
func takesLayerByLayer(t *testing.T) bool {
	t.Helper()
	target := t.TempDir()
	if err := mountOverlayByLayer([]string{t.TempDir(), t.TempDir()}, "", "", target); err != nil {
		t.Logf("no \"lowerdir+\" here: %v", err)
		return false
	}
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	return true
}

// TestCopyFailedSaysWhatToDo: a copy of the layers that fails too is
// ResourceExhausted on a full disk, else FailedPrecondition, and says what
// would spare it.
func TestCopyFailedSaysWhatToDo(t *testing.T) {
	tooLong := fmt.Errorf("90 layers: %w", errLayerListTooLong)
	why, remedy := copyReason(tooLong)
	for cerr, kind := range map[error]error{
		&os.PathError{Op: "write", Path: "x", Err: unix.ENOSPC}: errdefs.ErrResourceExhausted,
		&os.PathError{Op: "open", Path: "x", Err: unix.EIO}:     errdefs.ErrFailedPrecondition,
	} {
		err := copyFailed(why, remedy, tooLong, cerr)
		if !errors.Is(err, kind) || !strings.Contains(err.Error(), "Linux 6.8") || !strings.Contains(err.Error(), cerr.Error()) {
			t.Errorf("copy failing with %v: %v, want %v saying what to do", cerr, err, kind)
		}
	}
	if why, _ := copyReason(unix.EINVAL); why != "" {
		t.Errorf("EINVAL is copied: %s", why)
	}
}
