package fsutil

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestReadKernelFile: a file is read whole across the buffer's growth (a
// regular one here, as /proc's sizes change between two reads), an empty
// one is empty, a missing one is fs.ErrNotExist with its path.
func TestReadKernelFile(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 1, 4095, 4096, 4097, 100_000} {
		p := filepath.Join(dir, "f")
		want := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		if err := os.WriteFile(p, want, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadKernelFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%d bytes: read %d, %v", size, len(got), err)
		}
	}
	if _, err := ReadKernelFile("/proc/self/status"); err != nil {
		t.Errorf("/proc/self/status: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	_, err := ReadKernelFile(missing)
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Path != missing {
		t.Errorf("missing file: %v, want a PathError of %s that is ErrNotExist", err, missing)
	}
}
