package mountinfo

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/roottest"
)

func TestReadSeesATmpfsWithASpace(t *testing.T) {
	roottest.Require(t)
	dir := filepath.Join(t.TempDir(), "with space")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("mi-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if ok, err := MountedAt(dir); err != nil || !ok {
		t.Fatalf("MountedAt(%q) = %v, %v", dir, ok, err)
	}
	mp, err := MountpointOf(filepath.Join(dir, "a", "b"))
	if err != nil || mp != dir {
		t.Errorf("MountpointOf = %q, %v; want %q", mp, err, dir)
	}
	mounts, _ := Read()
	found := false
	for _, m := range mounts {
		found = found || (m.Mountpoint == dir && m.FSType == "tmpfs" && m.Source == "mi-test")
	}
	if !found {
		t.Errorf("tmpfs at %q not read back", dir)
	}
	if ok, _ := MountedAt(filepath.Join(dir, "nothing")); ok {
		t.Error("MountedAt of a plain directory")
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/run/a\040b`: "/run/a b",
		`/plain`:      "/plain",
		`/tab\011x`:   "/tab\tx",
		`/short\04`:   `/short\04`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
