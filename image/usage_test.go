package image

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

func TestContainerUsageCountsWritableLayer(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "small:1", imageOf(t, layer(t, dir("etc"), file("etc/base", "image content"))))
	s := openStore(t, reg, Options{})
	img := pull(t, s, reg.host+"/small:1")
	root := mountRootfs(t, s, "ctr1", img.ID)

	before, err := s.ContainerUsage("ctr1")
	if err != nil {
		t.Fatal(err)
	}
	// 10 files of 64 KiB in a new directory: 11 inodes and at least 640 KiB more.
	if err := os.MkdirAll(filepath.Join(root, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := os.WriteFile(filepath.Join(root, "data", string(rune('a'+i))), make([]byte, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	after, err := s.ContainerUsage("ctr1")
	if err != nil {
		t.Fatal(err)
	}
	if after.Inodes != before.Inodes+11 || after.Bytes < before.Bytes+640<<10 {
		t.Errorf("after writing: %d bytes %d inodes, before %d bytes %d inodes", after.Bytes, after.Inodes, before.Bytes, before.Inodes)
	}
	var fs unix.Statfs_t
	var st unix.Stat_t
	if err := unix.Statfs(s.root, &fs); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(s.root, &st); err != nil {
		t.Fatal(err)
	}
	if after.CapacityBytes != fs.Blocks*uint64(fs.Bsize) || after.InodesTotal != fs.Files || after.InodesFree == 0 ||
		after.AvailableBytes == 0 || after.AvailableBytes > after.CapacityBytes {
		t.Errorf("file system figures %+v, statfs of the store %+v", after, fs)
	}
	if after.Major != unix.Major(st.Dev) || after.Minor != unix.Minor(st.Dev) || after.Mountpoint == "" {
		t.Errorf("device %d:%d at %q, store on %d:%d", after.Major, after.Minor, after.Mountpoint, unix.Major(st.Dev), unix.Minor(st.Dev))
	}

	if _, err := s.ContainerUsage("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown container: %v", err)
	}
	if _, err := s.ContainerUsage("../layers"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("path as container id: %v", err)
	}
}

// BenchmarkContainerUsage: the usage of one container's writable layer on
// a node with 300 more mounts (a full node's overlays, shm and namespace
// pins), read once per container by every ListPodSandboxStats.
func BenchmarkContainerUsage(b *testing.B) {
	roottest.Require(b)
	reg := newTestRegistry(b)
	reg.push(b, "small:1", imageOf(b, layer(b, dir("etc"), file("etc/base", "image content"))))
	s := openStore(b, reg, Options{})
	img := pull(b, s, reg.host+"/small:1")
	mountRootfs(b, s, "ctr1", img.ID)
	base := b.TempDir()
	for i := range 300 {
		d := filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=4k"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = unix.Unmount(d, unix.MNT_DETACH) })
	}
	for b.Loop() {
		if _, err := s.ContainerUsage("ctr1"); err != nil {
			b.Fatal(err)
		}
	}
}
