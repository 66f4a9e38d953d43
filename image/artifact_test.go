package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// blob is one blob of a test artifact: content, media type, title ("" for none).
type blob struct {
	content    []byte
	mediaType  types.MediaType
	title      string
	noTitleKey bool
}

// artifact builds an OCI artifact (a config that is no image config) of blobs.
func artifact(t *testing.T, configType types.MediaType, blobs ...blob) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), configType)
	for _, b := range blobs {
		add := mutate.Addendum{Layer: static.NewLayer(b.content, b.mediaType)}
		if !b.noTitleKey {
			add.Annotations = map[string]string{annoTitle: b.title}
		}
		var err error
		if img, err = mutate.Append(img, add); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func gzipTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	return gz.Bytes()
}

// TestArtifactAsImageVolume: an OCI artifact (KEP-4639's image volume
// source) is pulled with each blob a file named by its title (a nested
// path too, or its digest without one) or, for a tar, unpacked; it mounts
// read-only as a directory tree; it is refused as a container's image;
// two artifacts with the same (empty) config stay apart.
func TestArtifactAsImageVolume(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	const emptyConfig = types.MediaType("application/vnd.oci.empty.v1+json")
	noTitle := []byte("blob without a title")
	art := artifact(t, "application/vnd.cncf.example.config.v1+json",
		blob{content: []byte("key: value\n"), mediaType: "application/yaml", title: "config/app.yaml"},
		blob{content: noTitle, mediaType: "application/octet-stream", noTitleKey: true},
		blob{content: gzipTar(t, dir("data"), file("data/x", "from a tar"), entry{name: "data/link", link: "x", typ: tar.TypeSymlink}),
			mediaType: "application/vnd.oci.image.layer.v1.tar+gzip"},
	)
	reg.push(t, "art:1", art)
	other := artifact(t, emptyConfig, blob{content: []byte("a"), mediaType: "text/plain", title: "a.txt"})
	reg.push(t, "art:2", other)
	reg.push(t, "art:3", artifact(t, emptyConfig, blob{content: []byte("b"), mediaType: "text/plain", title: "b.txt"}))

	s := openStore(t, reg, Options{})
	got := pull(t, s, reg.host+"/art:1")
	manifestDigest, _ := art.Digest()
	if got.ID != manifestDigest.String() || got.ArtifactType != "application/vnd.cncf.example.config.v1+json" {
		t.Errorf("artifact: ID %s type %q, want the manifest digest %s and the config type", got.ID, got.ArtifactType, manifestDigest)
	}
	target := t.TempDir()
	if err := s.MountImage("vol-art", got.ID, target, nil); err != nil {
		t.Fatalf("MountImage: %v", err)
	}
	t.Cleanup(func() {
		if err := s.ReleaseRootfs("vol-art", target); err != nil {
			t.Error(err)
		}
	})
	d, _ := static.NewLayer(noTitle, "").Digest()
	for name, want := range map[string]string{"config/app.yaml": "key: value\n", "sha256-" + d.Hex: string(noTitle), "data/x": "from a tar", "data/link": "from a tar"} {
		if data, err := os.ReadFile(filepath.Join(target, name)); err != nil || string(data) != want {
			t.Errorf("%s in the volume: %q %v, want %q", name, data, err, want)
		}
	}
	if st, err := os.Stat(filepath.Join(target, "config/app.yaml")); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("file mode: %v %v, want 0644", st.Mode(), err)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); err == nil {
		t.Error("the artifact volume is writable")
	}
	if err := s.PrepareRootfs("ctr-art", got.ID, t.TempDir(), nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("an artifact as a container's image: %v, want InvalidArgument", err)
	}
	a, b := pull(t, s, reg.host+"/art:2"), pull(t, s, reg.host+"/art:3")
	if a.ID == b.ID {
		t.Errorf("two artifacts with the same config share the ID %s", a.ID)
	}
}

// TestHostileArtifacts: a title that leaves the volume is refused
// (InvalidArgument) and a blob past the layer size limit ResourceExhausted,
// both leaving nothing in the store.
func TestHostileArtifacts(t *testing.T) {
	reg := newTestRegistry(t)
	for _, title := range []string{"../escape", "/etc/passwd", "a/../../b"} {
		reg.push(t, "hostile:1", artifact(t, "application/x-test", blob{content: []byte("x"), mediaType: "text/plain", title: title}))
		s := openStore(t, reg, Options{})
		if _, err := tryPull(s, reg.host+"/hostile:1"); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("title %q: %v, want InvalidArgument", title, err)
		}
		assertEmptyDir(t, filepath.Join(s.root, "layers"))
	}
	reg.push(t, "big:1", artifact(t, "application/x-test", blob{content: bytes.Repeat([]byte("x"), 4096), mediaType: "text/plain", title: "big"}))
	s := openStore(t, reg, Options{Unpack: UnpackOptions{MaxBytes: 1024}})
	if _, err := tryPull(s, reg.host+"/big:1"); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("a blob over the limit: %v, want ResourceExhausted", err)
	}
	assertEmptyDir(t, filepath.Join(s.root, "layers"))
	assertEmptyDir(t, filepath.Join(s.root, "tmp"))
}
