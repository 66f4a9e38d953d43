package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

func TestImportDockerSave(t *testing.T) {
	roottest.Require(t)
	one := imageOf(t, layer(t, file("one", "1")))
	two := imageOf(t, layer(t, file("two", "2")), layer(t, file("more", "3")))
	archive := filepath.Join(t.TempDir(), "images.tar")
	refs := map[name.Reference]v1.Image{
		name.MustParseReference("busybox:1.36"):              one,
		name.MustParseReference("registry.k8s.io/pause:3.9"): two,
	}
	if err := tarball.MultiRefWriteToFile(archive, refs); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, nil, Options{})
	imgs, err := s.Import(context.Background(), archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 {
		t.Fatalf("imported %d images, want 2", len(imgs))
	}
	for ref, want := range map[string]v1.Image{"docker.io/library/busybox:1.36": one, "registry.k8s.io/pause:3.9": two} {
		got, err := s.Get(ref)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := want.ConfigName()
		if got.ID != id.String() {
			t.Errorf("%s: id %s, want %s", ref, got.ID, id)
		}
	}
	pause, _ := s.Get("registry.k8s.io/pause:3.9")
	root := mountRootfs(t, s, "imported", pause.ID)
	if data, err := os.ReadFile(filepath.Join(root, "more")); err != nil || string(data) != "3" {
		t.Errorf("imported image's rootfs: %q %v", data, err)
	}
}

func TestImportOCIArchive(t *testing.T) {
	roottest.Require(t)
	img := imageOf(t, layer(t, file("oci", "yes")))
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{annoContainerdName: "example.com/app:v2"})); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "oci.tar")
	tarDir(t, dir, archive)
	s := openStore(t, nil, Options{})
	if _, err := s.Import(context.Background(), archive, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("example.com/app:v2")
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	if len(got.RepoDigests) != 1 || got.RepoDigests[0] != "example.com/app@"+digest.String() {
		t.Errorf("digests %v", got.RepoDigests)
	}
	assertEmptyDir(t, filepath.Join(s.root, "tmp"))
}

func TestImportRefusesOtherFiles(t *testing.T) {
	s := openStore(t, nil, Options{})
	notTar := filepath.Join(t.TempDir(), "x")
	os.WriteFile(notTar, []byte("hello, not a tar"), 0o644)
	if _, err := s.Import(context.Background(), notTar, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("import of a text file: %v, want InvalidArgument", err)
	}
	// An OCI archive whose entry climbs out of the scratch directory.
	evil := filepath.Join(t.TempDir(), "evil.tar")
	f, _ := os.Create(evil)
	tw := tar.NewWriter(f)
	for _, n := range []string{"oci-layout", "index.json", "../../escaped"} {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
		tw.Write([]byte("{}"))
	}
	tw.Close()
	f.Close()
	if _, err := s.Import(context.Background(), evil, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("import of an escaping archive: %v, want InvalidArgument", err)
	}
	if _, err := os.Stat(filepath.Join(s.root, "escaped")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an archive entry escaped: %v", err)
	}
}

// tarDir writes the files under dir into a tar at out.
func tarDir(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	defer tw.Close()
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = rel
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
