package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
	"github.com/cri-mini/cri-mini/internal/treetest"
)

// containerFSTest is a store with two images, app:1 and vol:1, and the
// owner of container file systems mounted from it below dir.
type containerFSTest struct {
	s        *Store
	fs       *ContainerFS
	dir      string
	app, vol string // the images' references
	policy   string // the store's signature policy file
}

func newContainerFSTest(t *testing.T) *containerFSTest {
	t.Helper()
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "app:1", imageOf(t, layer(t, dir("etc"), file("etc/app", "app"))))
	reg.push(t, "vol:1", imageOf(t, layer(t, file("data", "volume"))))
	policy := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, policy, `{"default": [{"type": "insecureAcceptAnything"}]}`)
	s := openStore(t, reg, Options{SignaturePolicy: policy})
	c := &containerFSTest{s: s, dir: t.TempDir(), app: reg.host + "/app:1", vol: reg.host + "/vol:1", policy: policy}
	pull(t, s, c.app)
	pull(t, s, c.vol)
	c.fs = NewContainerFS(s, c.dir)
	return c
}

// assertNothingOf fails if anything of container id is left: a mount, a
// mount point, a record in the store.
func (c *containerFSTest) assertNothingOf(t *testing.T, id string) {
	t.Helper()
	points, _ := filepath.Glob(filepath.Join(c.dir, id+"*"))
	for _, p := range points {
		assertNotMounted(t, p)
	}
	if len(points) != 0 {
		t.Errorf("mount points of %s left: %v", id, points)
	}
	recorded, err := c.s.Containers()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range recorded {
		if strings.HasPrefix(name, id) {
			t.Errorf("store record %s of %s left", name, id)
		}
	}
}

// assertEmpty fails unless no container has a mount point or a record.
func (c *containerFSTest) assertEmpty(t *testing.T) {
	t.Helper()
	assertEmptyDir(t, c.dir)
	assertEmptyDir(t, filepath.Join(c.s.root, "containers"))
}

// TestContainerFSPrepareAndRelease: one call mounts a container's root
// file system (writable) and its image volumes (read-only, in order, with
// the IDs of their images); one call releases all of it, twice without
// error.
func TestContainerFSPrepareAndRelease(t *testing.T) {
	c := newContainerFSTest(t)
	got, err := c.fs.Prepare("ctr1", FSSpec{Image: c.app, Volumes: []VolumeSpec{{Image: c.vol, Path: "/v"}, {Image: c.app, Path: "/a"}}})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	vol, err := c.s.Get(c.vol)
	if err != nil {
		t.Fatal(err)
	}
	if got.Image == nil || !slices.Contains(got.Image.RepoTags, c.app) || got.Rootfs != filepath.Join(c.dir, "ctr1") {
		t.Errorf("rootfs %s of image %+v", got.Rootfs, got.Image)
	}
	if len(got.Volumes) != 2 || got.Volumes[0].ImageID != vol.ID || got.Volumes[1].ImageID != got.Image.ID {
		t.Fatalf("volumes %+v", got.Volumes)
	}
	if err := os.WriteFile(filepath.Join(got.Rootfs, "new"), nil, 0o644); err != nil {
		t.Errorf("write into the root file system: %v", err)
	}
	for i, want := range []string{"data", "etc/app"} {
		v := got.Volumes[i].Path
		if _, err := os.Stat(filepath.Join(v, want)); err != nil {
			t.Errorf("volume %d: %v", i, err)
		}
		if err := os.WriteFile(filepath.Join(v, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write into volume %d: %v, want EROFS", i, err)
		}
	}
	for range 2 {
		if err := c.fs.Release("ctr1"); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	c.assertNothingOf(t, "ctr1")
	c.assertEmpty(t)
}

// TestContainerFSFailureHalfWay: a create that fails half way (the second
// image volume's image missing, or refused by the signature policy, or the
// root image missing) leaves nothing mounted and nothing recorded.
func TestContainerFSFailureHalfWay(t *testing.T) {
	c := newContainerFSTest(t)
	_, err := c.fs.Prepare("half", FSSpec{Image: c.app, Volumes: []VolumeSpec{{Image: c.vol, Path: "/v"}, {Image: "missing.local/none:1", Path: "/gone"}}})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(fmt.Sprint(err), "image volume at /gone") {
		t.Errorf("Prepare with a missing volume image: %v, want NotFound naming the volume", err)
	}
	c.assertNothingOf(t, "half")

	if _, err := c.fs.Prepare("noimage", FSSpec{Image: "missing.local/none:1"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Prepare with a missing image: %v, want NotFound", err)
	}
	c.assertNothingOf(t, "noimage")

	writePolicy(t, c.policy, `{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"`+strings.TrimSuffix(c.vol, ":1")+`": [{"type": "reject"}]}}}`)
	if _, err := c.fs.Prepare("refused", FSSpec{Image: c.app, Volumes: []VolumeSpec{{Image: c.vol, Path: "/v"}}}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(fmt.Sprint(err), "rejected") {
		t.Errorf("Prepare with a volume the policy rejects: %v, want FailedPrecondition", err)
	}
	c.assertNothingOf(t, "refused")
	c.assertEmpty(t)
}

// TestContainerFSCollectOrphans: at start, the file systems of containers
// the runtime does not know go, whole or as a crash left them (a mount
// point made, nothing mounted yet; a volume's record without its
// container's), and those of known containers stay mounted.
func TestContainerFSCollectOrphans(t *testing.T) {
	c := newContainerFSTest(t)
	for _, id := range []string{"known", "gone"} {
		if _, err := c.fs.Prepare(id, FSSpec{Image: c.app, Volumes: []VolumeSpec{{Image: c.vol}}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = c.fs.Release("known") })
	if err := os.Mkdir(filepath.Join(c.dir, "pointonly"), 0o700); err != nil {
		t.Fatal(err)
	}
	vol, err := c.s.Get(c.vol)
	if err != nil {
		t.Fatal(err)
	}
	// A volume's record, its mount gone with the run directory (a reboot).
	elsewhere := t.TempDir()
	if err := c.s.MountImage("rebooted"+imageVolumeSep+"0", vol.ID, elsewhere, nil); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(elsewhere, 0); err != nil {
		t.Fatal(err)
	}

	released := c.fs.CollectOrphans(func(id string) bool { return id == "known" })
	if want := []string{"gone", "pointonly", "rebooted"}; !slices.Equal(released, want) {
		t.Errorf("released %v, want %v", released, want)
	}
	for _, id := range []string{"gone", "pointonly", "rebooted"} {
		c.assertNothingOf(t, id)
	}
	for _, p := range []string{"known/etc/app", "known" + imageVolumeSep + "0/data"} {
		if _, err := os.Stat(filepath.Join(c.dir, p)); err != nil {
			t.Errorf("the known container's file system: %v", err)
		}
	}
}

// TestContainerFSIdmapped: the root file system and an image volume are
// idmapped as their specs say (the image's root is the namespace's root).
func TestContainerFSIdmapped(t *testing.T) {
	c := newContainerFSTest(t)
	idmap := &IDMap{UserNS: testUserNS(t), UID: idmapHost, GID: idmapHost}
	got, err := c.fs.Prepare("ctr-idmap", FSSpec{Image: c.app, IDMap: idmap, Volumes: []VolumeSpec{{Image: c.vol, IDMap: idmap}, {Image: c.vol}}})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	t.Cleanup(func() {
		if err := c.fs.Release("ctr-idmap"); err != nil {
			t.Error(err)
		}
		c.assertNothingOf(t, "ctr-idmap")
	})
	mapped := fmt.Sprintf("%d:%d", idmapHost, idmapHost)
	for path, want := range map[string]string{
		filepath.Join(got.Rootfs, "etc/app"):       mapped,
		filepath.Join(got.Volumes[0].Path, "data"): mapped,
		filepath.Join(got.Volumes[1].Path, "data"): "0:0",
	} {
		if owner := treetest.Owner(t, path); owner != want {
			t.Errorf("%s owned by %s, want %s", path, owner, want)
		}
	}
}
