package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/roottest"
)

// Cases HU found: cancellation and directory times after a replacement.

// TestUnpackCancelled: a cancelled context stops the unpack with its error.
func TestUnpackCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Unpack(ctx, tarOf(t, file("a", "a")), t.TempDir(), UnpackOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled unpack: %v", err)
	}
}

// TestUnpackDirTimesAfterReplacement: a directory whose name a later entry
// turns into a symlink gives its times to nothing, not to the symlink's
// target.
func TestUnpackDirTimesAfterReplacement(t *testing.T) {
	roottest.Require(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(1600000002, 0)},
		{Name: "b/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(1600000001, 0)},
		{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "b", ModTime: time.Unix(1600000003, 0)},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	dir, _, err := unpackDir(t, &buf, UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(dir, "b")); st.Mtim.Sec != 1600000001 {
		t.Errorf("b mtime %d, want its own 1600000001", st.Mtim.Sec)
	}
	if st := lstat(t, filepath.Join(dir, "a")); st.Mtim.Sec != 1600000003 {
		t.Errorf("symlink a mtime %d, want 1600000003", st.Mtim.Sec)
	}
}
