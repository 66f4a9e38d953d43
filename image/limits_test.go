package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// withEnv is img with an environment of about n bytes in its config.
func withEnv(t *testing.T, img v1.Image, n int) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Env = []string{"BIG=" + strings.Repeat("x", n)}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func assertOverCap(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "4194304") || !strings.Contains(err.Error(), what) {
		t.Errorf("%v, want InvalidArgument naming the %s and its 4 MiB cap", err, what)
	}
}

// TestOversizedConfigAndManifestRefused: pulling or importing an image
// whose config or manifest is over 4 MiB fails with InvalidArgument naming
// the cap, and stores nothing; one just under the cap is accepted.
func TestOversizedConfigAndManifestRefused(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	base := imageOf(t, layer(t, file("a", "1")))
	reg.push(t, "bigconfig:1", withEnv(t, base, 5<<20))
	fat := mutate.Annotations(base, map[string]string{"padding": strings.Repeat("p", 5<<20)}).(v1.Image)
	reg.push(t, "bigmanifest:1", fat)
	reg.push(t, "nearcap:1", withEnv(t, base, maxConfigBytes-4096))
	s := openStore(t, reg, Options{})

	_, err := s.Pull(context.Background(), reg.host+"/bigconfig:1", PullOptions{})
	assertOverCap(t, "config", err)
	_, err = s.Pull(context.Background(), reg.host+"/bigmanifest:1", PullOptions{})
	assertOverCap(t, "manifest", err)
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("refused pulls stored %d images", len(imgs))
	}
	if img := pull(t, s, reg.host+"/nearcap:1"); len(img.Config.Config.Env[0]) < maxConfigBytes-4096 {
		t.Errorf("the config under the cap lost its environment")
	}

	archive := filepath.Join(t.TempDir(), "big.tar")
	if err := tarball.WriteToFile(archive, mustTag(t, "example.com/big:1"), withEnv(t, base, 5<<20)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Import(context.Background(), archive, nil)
	assertOverCap(t, "config", err)

	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(withEnv(t, base, 5<<20), layout.WithAnnotations(map[string]string{annoContainerdName: "example.com/big:2"})); err != nil {
		t.Fatal(err)
	}
	oci := filepath.Join(t.TempDir(), "oci.tar")
	tarDir(t, dir, oci)
	_, err = s.Import(context.Background(), oci, nil)
	assertOverCap(t, "config", err)
	if imgs, _ := s.List(); len(imgs) != 1 {
		t.Errorf("refused imports stored images: %d in the store, want the one pulled", len(imgs))
	}
}

// TestManifestBodyCappedWithoutLength: a registry that streams a manifest
// without a Content-Length (or with a false one) is cut at the cap.
func TestManifestBodyCappedWithoutLength(t *testing.T) {
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Host: "reg.example", Path: "/v2/app/manifests/latest"}}
	resp := &http.Response{ContentLength: -1, Body: io.NopCloser(bytes.NewReader(make([]byte, maxManifestBytes+1)))}
	resp, err := limitManifest(req, resp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	assertOverCap(t, "manifest", err)

	ok := &http.Response{ContentLength: -1, Body: io.NopCloser(bytes.NewReader(make([]byte, maxManifestBytes)))}
	if ok, err = limitManifest(req, ok); err != nil {
		t.Fatal(err)
	}
	if data, err := io.ReadAll(ok.Body); err != nil || len(data) != maxManifestBytes {
		t.Errorf("a manifest at the cap: %d bytes, %v", len(data), err)
	}
}

func mustTag(t *testing.T, ref string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// TestConfigMustBeUTF8: bytes that are not UTF-8 would each decode to a
// three-byte U+FFFD in every copy of the config.
func TestConfigMustBeUTF8(t *testing.T) {
	if err := checkConfig([]byte("{\"config\":{\"Env\":[\"A=\xff\xfe\"]}}")); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("config with bytes that are not UTF-8: %v", err)
	}
	if err := checkConfig([]byte(`{"config":{"Env":["A=é\u2028<"]}}`)); err != nil {
		t.Errorf("a UTF-8 config: %v", err)
	}
}
