package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cri-mini/cri-mini/internal/roottest"
)

// TestImageCommands imports a docker save tarball into a store with the
// CLI, lists it, removes it, and checks what bad input gets.
func TestImageCommands(t *testing.T) {
	roottest.Require(t)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "app.tar")
	if err := tarball.WriteToFile(archive, name.MustParseReference("example.com/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	cli := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"image", args[0], "--root", root}, args[1:]...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	id, _ := img.ConfigName()
	if code, out, errOut := cli("import", archive); code != 0 || !strings.Contains(out, id.String()+" example.com/app:v1") || !strings.Contains(out, "done") {
		t.Fatalf("import: %d %q %q", code, out, errOut)
	}
	if code, out, _ := cli("ls"); code != 0 || !strings.Contains(out, "example.com/app:v1") || !strings.Contains(out, id.Hex[:13]) {
		t.Errorf("ls: %d %q", code, out)
	}
	if code, _, errOut := cli("rm", "example.com/app:v1"); code != 0 {
		t.Errorf("rm: %d %q", code, errOut)
	}
	if code, out, _ := cli("ls"); code != 0 || strings.Contains(out, "example.com") {
		t.Errorf("ls after rm: %d %q", code, out)
	}
	for _, bad := range [][]string{{"rm", "example.com/app:v1"}, {"import", filepath.Join(root, "missing.tar")}, {"pull", "UPPER/case"}} {
		if code, _, errOut := cli(bad...); code != 1 || errOut == "" {
			t.Errorf("image %v: exit %d, stderr %q; want 1 with a message", bad, code, errOut)
		}
	}
	if code, _, errOut := cli("frob"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("image frob: %d %q", code, errOut)
	}
	if code, _, _ := cli("ls", "extra"); code != 2 {
		t.Errorf("image ls extra: %d, want 2", code)
	}
}
