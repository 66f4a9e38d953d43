package image

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// withVolumes is img with VOLUMEs in its config.
func withVolumes(t *testing.T, img v1.Image, volumes ...string) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Volumes = map[string]struct{}{}
	for _, v := range volumes {
		cfg.Config.Volumes[v] = struct{}{}
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestImageVolumesMadeInWritableLayer: an image's VOLUMEs become
// directories of the container's root, writable, in its own layer (the
// image's layers untouched), what the image has there kept; paths that
// climb or pass through the image's symlinks (absolute ones included) stay
// inside the root; a file where a VOLUME should be fails the create with
// InvalidArgument and leaves nothing; IgnoreImageVolumes makes none.
func TestImageVolumesMadeInWritableLayer(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	host := t.TempDir() // what an absolute symlink in the image names on the host
	img := withVolumes(t, imageOf(t, layer(t,
		dir("real"), dir("kept"), file("kept/old", "from the image"),
		entry{name: "link", link: "/real", typ: tar.TypeSymlink, mode: 0o777},
		entry{name: "hostlink", link: host, typ: tar.TypeSymlink, mode: 0o777},
	)), "/vol/data", "/link/sub", "/../../escape", "/hostlink/x", "/kept")
	reg.push(t, "vols:1", img)
	s := openStore(t, reg, Options{})
	id := pull(t, s, reg.host+"/vols:1").ID
	root := mountRootfs(t, s, "ctr-vols", id)
	for _, d := range []string{"vol/data", "real/sub", "escape", filepath.Join(host, "x"), "kept"} {
		if st, err := os.Lstat(filepath.Join(root, d)); err != nil || !st.IsDir() {
			t.Errorf("VOLUME directory %s in the rootfs: %v", d, err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "vol/data/written"), []byte("x"), 0o644); err != nil {
		t.Errorf("the VOLUME is not writable: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(root, "kept/old")); err != nil || string(data) != "from the image" {
		t.Errorf("the image's content at a VOLUME: %q %v", data, err)
	}
	assertEmptyDir(t, host)
	if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escape")); err == nil {
		t.Error("a VOLUME that climbs was made outside the root")
	}
	for _, l := range layerDirs(t, s) {
		if _, err := os.Stat(filepath.Join(s.root, "layers", l, "vol")); err == nil {
			t.Errorf("layer %s got the VOLUME directory", l)
		}
	}

	ignoring := openStore(t, reg, Options{IgnoreImageVolumes: true})
	root = mountRootfs(t, ignoring, "ctr-novols", pull(t, ignoring, reg.host+"/vols:1").ID)
	if _, err := os.Stat(filepath.Join(root, "vol")); err == nil {
		t.Error("IgnoreImageVolumes: the VOLUME was made")
	}

	reg.push(t, "filevol:1", withVolumes(t, imageOf(t, layer(t, file("data", "a file"))), "/data"))
	bad := pull(t, s, reg.host+"/filevol:1").ID
	target := t.TempDir()
	if err := s.PrepareRootfs("ctr-filevol", bad, target, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a file at the VOLUME path: %v, want InvalidArgument", err)
	}
	assertNotMounted(t, target)
	if _, err := os.Stat(s.containerDir("ctr-filevol")); err == nil {
		t.Error("the refused container's writable layer was left")
	}
}
