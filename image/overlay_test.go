package image

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// kernels are the ways overlayfs takes layers, newest first, as
// overlayWays turns them on: on this host a test takes each.
var kernels = []struct {
	name         string
	layerByLayer bool
}{
	{"6.8-one-by-one", true},
	{"before-6.8-one-list", false},
}

// asKernel makes mountOverlay take only the ways of an older kernel until
// the test ends.
func asKernel(t *testing.T, layerByLayer bool) {
	t.Helper()
	saved := overlayWays
	overlayWays.layerByLayer = layerByLayer
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

// TestManyLayersOnOlderKernels: where overlayfs takes the layers only as
// one list (before Linux 6.8), an image whose list of full paths is longer
// than mount(2)'s page of options still mounts (the paths relative to the
// layers' directory), and one whose list does not fit even so is copied;
// idmapped (by descriptor) they mount too.
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
			asKernel(t, k.layerByLayer)
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
					// Only the list of ninety, relative too, is too long.
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
