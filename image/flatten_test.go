package image

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/roottest"
)

// flattenLayers unpacks each tar into its own layer directory and gives
// layer i's entries the times 1700000000+i, so the comparison can tell
// which layer an entry came from.
func flattenLayers(t *testing.T, layers ...[]entry) []string {
	t.Helper()
	var dirs []string
	for i, entries := range layers {
		dir, _, err := unpackDir(t, tarOf(t, entries...), UnpackOptions{})
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		ts := []unix.Timespec{{Sec: int64(1700000000 + i)}, {Sec: int64(1700000000 + i)}}
		err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		})
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	return dirs
}

// overlayOf mounts the layers read-only the way a container's image would
// be mounted, for Flatten to be compared with.
func overlayOf(t *testing.T, layers []string) string {
	t.Helper()
	top := slices.Clone(layers)
	slices.Reverse(top)
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(top, ":")); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})
	return mnt
}

// treeOf describes every entry below root (type, mode, owner, mtime,
// content or target, device, xattrs) and groups the hard links.
func treeOf(t *testing.T, root string) (map[string]string, [][]string) {
	t.Helper()
	tree := map[string]string{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode %o owner %d:%d mtime %d", st.Mode, st.Uid, st.Gid, st.Mtim.Nano())
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" content %q", data)
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			desc += fmt.Sprintf(" rdev %d", st.Rdev)
		}
		names, err := xattrNames(p)
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, name := range names {
			value := make([]byte, 256)
			n, err := unix.Lgetxattr(p, name, value)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %s=%q", name, value[:n])
		}
		tree[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var links [][]string
	for _, paths := range inodes {
		if len(paths) > 1 {
			slices.Sort(paths)
			links = append(links, paths)
		}
	}
	slices.SortFunc(links, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return tree, links
}

func TestFlattenMatchesOverlay(t *testing.T) {
	roottest.Require(t)
	// A symlink of the base layer points at this directory outside the
	// layers; nothing may be written through it.
	sentinel := t.TempDir()
	if err := os.WriteFile(filepath.Join(sentinel, "file"), []byte("sentinel"), 0o644); err != nil {
		t.Fatal(err)
	}
	layers := flattenLayers(t,
		[]entry{
			dir("bin"),
			{name: "bin/tool", body: "tool", typ: tar.TypeReg, mode: 0o4755},
			{name: "bin/alias", link: "bin/tool", typ: tar.TypeLink},
			{name: "bin/sh", link: "tool", typ: tar.TypeSymlink, mode: 0o777},
			{name: "etc/owned", body: "mine", typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1001},
			{name: "etc/attr", body: "x", typ: tar.TypeReg, mode: 0o644, xattrs: map[string]string{"user.note": "kept"}},
			file("data/gone", "whited out above"), file("data/keep", "kept"), file("data/old/file", "old"),
			file("opq/hidden", "hidden by the opaque dir above"), file("opq/sub/deep", "hidden too"),
			file("dirgone/x", "whole directory whited out above"),
			file("tofile/child", "directory replaced by a file above"),
			file("tolink/child", "directory replaced by a symlink above"),
			file("todir", "file replaced by a directory above"),
			{name: "evil", link: sentinel, typ: tar.TypeSymlink},
			{name: "esc", link: filepath.Join(sentinel, "file"), typ: tar.TypeSymlink},
			{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620},
			{name: "merged/", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"user.a": "1"}},
			file("merged/lower", "lower"),
			file("hl/a", "linked"),
			{name: "hl/b", link: "hl/a", typ: tar.TypeLink},
			{name: "hl/c", link: "hl/a", typ: tar.TypeLink},
		},
		[]entry{
			file("data/.wh.gone", ""), file(".wh.dirgone", ""),
			file("opq/.wh..wh..opq", ""), file("opq/new", "new"),
			file("tofile", "now a file"),
			file("evil/inside", "a directory over the symlink"),
			file("esc", "a file over the symlink"),
			{name: "merged/", typ: tar.TypeDir, mode: 0o700, uid: 5, gid: 6, xattrs: map[string]string{"user.b": "2"}},
			file("merged/upper", "upper"),
			file("hl/.wh.b", ""),
			file("etc/replaced", "first"),
			file("up/x", "x"), {name: "up/y", link: "up/x", typ: tar.TypeLink},
		},
		[]entry{
			file(".wh..wh..opq", ""), // overlay ignores an opaque layer root
			file("etc/replaced", "second"),
			{name: "tolink", link: "/", typ: tar.TypeSymlink},
			file("todir/x", "now a directory"),
			{name: "data/old/", typ: tar.TypeDir, mode: 0o700, uid: 7, gid: 8},
			file("up/x", "replaced: no longer a link of up/y"),
		},
	)
	dst := t.TempDir()
	if err := Flatten(layers, dst); err != nil {
		t.Fatal(err)
	}
	got, gotLinks := treeOf(t, dst)
	want, wantLinks := treeOf(t, overlayOf(t, layers))

	for rel, w := range want {
		if g, ok := got[rel]; !ok {
			t.Errorf("%s: missing, overlay has %s", rel, w)
		} else if g != w {
			t.Errorf("%s:\n got %s\nwant %s", rel, g, w)
		}
	}
	for rel, g := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: %s, overlay has no such entry", rel, g)
		}
	}
	if !slices.EqualFunc(gotLinks, wantLinks, slices.Equal) {
		t.Errorf("hard links %q, overlay has %q", gotLinks, wantLinks)
	}
	// The comparison is only as good as the layers: check it saw each case.
	for _, rel := range []string{"bin/tool", "bin/sh", "etc/owned", "run/fifo", "merged/lower", "merged/upper", "opq/new",
		"todir/x", "evil/inside", "esc", "tolink"} {
		if _, ok := got[rel]; !ok {
			t.Errorf("%s missing", rel)
		}
	}
	for _, rel := range []string{"data/gone", "dirgone", "opq/hidden", "opq/sub", "hl/b", "tofile/child", "tolink/child"} {
		if _, ok := want[rel]; ok {
			t.Errorf("%s is in the overlay: the layers do not test what they should", rel)
		}
	}
	if len(gotLinks) != 2 {
		t.Errorf("hard link groups %q, want bin/alias+bin/tool and hl/a+hl/c", gotLinks)
	}
	if data, err := os.ReadFile(filepath.Join(sentinel, "file")); err != nil || string(data) != "sentinel" {
		t.Errorf("sentinel file changed: %q %v", data, err)
	}
	if entries, _ := os.ReadDir(sentinel); len(entries) != 1 {
		t.Errorf("sentinel directory has %d entries, want 1", len(entries))
	}
}

// A missing layer or destination is an error, not a partial copy elsewhere.
func TestFlattenMissingDirs(t *testing.T) {
	roottest.Require(t)
	layers := flattenLayers(t, []entry{file("a", "a")})
	if err := Flatten(append(layers, filepath.Join(t.TempDir(), "nope")), t.TempDir()); err == nil {
		t.Error("flatten of a missing layer succeeded")
	}
	if err := Flatten(layers, filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("flatten into a missing directory succeeded")
	}
}

// BenchmarkFlatten copies three layers (about 9 MiB of files in all), the
// upper two overwriting a quarter of the 200 files of the base.
func BenchmarkFlatten(b *testing.B) {
	chunk := strings.Repeat("0123456789abcdef", 1<<12) // 64 KiB
	var layers []string
	var total int64
	for l := range 3 {
		var entries []entry
		for i := range 200 {
			if l > 0 && i%4 != 0 {
				continue
			}
			entries = append(entries, file(fmt.Sprintf("d%d/f%d", i%10, i), chunk[:(i%4+1)<<14]))
			total += int64((i%4 + 1) << 14)
		}
		dir := b.TempDir()
		if _, err := Unpack(b.Context(), tarOf(b, entries...), dir, UnpackOptions{}); err != nil {
			b.Fatal(err)
		}
		layers = append(layers, dir)
	}
	b.SetBytes(total)
	scratch := b.TempDir()
	for b.Loop() {
		dst, err := os.MkdirTemp(scratch, "dst")
		if err != nil {
			b.Fatal(err)
		}
		if err := Flatten(layers, dst); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(dst)
		b.StartTimer()
	}
}
