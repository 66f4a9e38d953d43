package nspin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/nstest"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create and mount namespaces")
	}
}

// threadNS names the namespace of kind k that the calling thread is in.
func threadNS(t *testing.T, k Kind) string {
	t.Helper()
	link, err := os.Readlink("/proc/thread-self/ns/" + string(k))
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// assertGone checks that nothing is mounted at path and that no file is left.
func assertGone(t *testing.T, path string) {
	t.Helper()
	mounted, err := mountinfo.MountedAt(path)
	if err != nil {
		t.Fatal(err)
	}
	if mounted {
		t.Errorf("%s is still a mount point", path)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (err %v)", path, err)
	}
}

func TestPinJoinUnpin(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "pod")
	ownHost, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	kinds := []Kind{Net, UTS, IPC}
	paths, err := Pin(dir, kinds, func() error { return unix.Sethostname([]byte("pinned-pod")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Unpin(dir, kinds...) })

	for _, k := range kinds {
		p := paths[k]
		if p != Path(dir, k) {
			t.Errorf("%s pinned at %q, want %q", k, p, Path(dir, k))
		}
		if ok, err := IsPinned(p); err != nil || !ok {
			t.Errorf("IsPinned(%s) = %v, %v", p, ok, err)
		}
		if mounted, err := mountinfo.MountedAt(p); err != nil || !mounted {
			t.Errorf("mountinfo.MountedAt(%s) = %v, %v", p, mounted, err)
		}
		var joined string
		if err := Run(p, k, func() error { joined = threadNS(t, k); return nil }); err != nil {
			t.Fatalf("Run in %s: %v", k, err)
		}
		own := threadNS(t, k)
		if joined == own {
			t.Errorf("%s: joined namespace %s is our own", k, joined)
		}
		if want := nstest.Inode(t, p); joined != fmt.Sprintf("%s:[%d]", k, want) {
			t.Errorf("%s: joined %s, pin inode is %d", k, joined, want)
		}
	}

	// The setup ran inside the new uts namespace, not ours.
	var uname unix.Utsname
	if err := Run(paths[UTS], UTS, func() error { return unix.Uname(&uname) }); err != nil {
		t.Fatal(err)
	}
	if got := unix.ByteSliceToString(uname.Nodename[:]); got != "pinned-pod" {
		t.Errorf("hostname in pinned uts = %q, want pinned-pod", got)
	}
	if h, _ := os.Hostname(); h != ownHost {
		t.Errorf("our hostname changed to %q", h)
	}

	if err := Unpin(dir, kinds...); err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		assertGone(t, paths[k])
	}
	if err := Unpin(dir, kinds...); err != nil {
		t.Errorf("second Unpin: %v", err)
	}
	if err := Run(paths[Net], Net, func() error { return nil }); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Run in removed pin: %v, want ErrNotFound", err)
	}
}

func TestPinTwiceIsAlreadyExists(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	first, err := Pin(dir, []Kind{Net}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Unpin(dir, Net) })
	before := nstest.Inode(t, first[Net])
	if _, err := Pin(dir, []Kind{Net}, nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Pin: %v, want ErrAlreadyExists", err)
	}
	if after := nstest.Inode(t, first[Net]); after != before {
		t.Errorf("first pin replaced: inode %d -> %d", before, after)
	}
}

func TestPinRollsBack(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	boom := errors.New("boom")
	if _, err := Pin(dir, []Kind{Net, UTS}, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Pin with failing setup: %v", err)
	}
	assertGone(t, Path(dir, Net))
	assertGone(t, Path(dir, UTS))

	// The uts pin cannot be created (a directory is in the way): the net pin
	// made just before must be undone too.
	if err := os.Mkdir(Path(dir, UTS), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Pin(dir, []Kind{Net, UTS}, nil); err == nil {
		t.Fatal("Pin over a directory succeeded")
	}
	assertGone(t, Path(dir, Net))
}

func TestBadKinds(t *testing.T) {
	dir := t.TempDir()
	for _, kinds := range [][]Kind{{"mnt"}, {"user"}, {}} {
		if _, err := Pin(dir, kinds, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Pin(%v): %v, want ErrInvalidArgument", kinds, err)
		}
	}
	if err := Run("/proc/self/ns/mnt", "mnt", func() error { return nil }); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Run in mnt: %v, want ErrInvalidArgument", err)
	}
	if err := Unpin(dir, "pid"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Unpin(pid): %v, want ErrInvalidArgument", err)
	}
}

func TestIsPinnedPlainFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "net")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, err := IsPinned(f); err != nil || ok {
		t.Errorf("IsPinned(plain file) = %v, %v", ok, err)
	}
	if ok, err := IsPinned(f + ".missing"); err != nil || ok {
		t.Errorf("IsPinned(missing) = %v, %v", ok, err)
	}
}

// No thread of ours may stay in a namespace after Pin or Run: it would keep
// an unpinned namespace (and, for net, the pod's veth) alive. Go parks
// rather than ends the main thread, so this once failed on the first pin.
func TestNoThreadKeepsNamespace(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	for i := range 20 {
		dir := filepath.Join(root, fmt.Sprint(i))
		paths, err := Pin(dir, []Kind{Net, UTS, IPC}, nil)
		if err != nil {
			t.Fatal(err)
		}
		pinned := map[string]bool{}
		for k, p := range paths {
			if err := Run(p, k, func() error { pinned[threadNS(t, k)] = true; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		if err := Unpin(dir, Net, UTS, IPC); err != nil {
			t.Fatal(err)
		}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			for _, k := range []Kind{Net, UTS, IPC} {
				link, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns", string(k)))
				if err == nil && pinned[link] {
					t.Fatalf("pin %d: thread %s is still in %s", i, task.Name(), link)
				}
			}
		}
	}
}

// BenchmarkPinUnpin measures pinning a pod's net, uts and ipc namespaces and
// releasing them again.
func BenchmarkPinUnpin(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	kinds := []Kind{Net, UTS, IPC}
	for b.Loop() {
		if _, err := Pin(dir, kinds, nil); err != nil {
			b.Fatal(err)
		}
		if err := Unpin(dir, kinds...); err != nil {
			b.Fatal(err)
		}
	}
}
