package image

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// outsideDir is a directory next to the layer, with a file, whose state
// snapshot tells whether an unpack reached it.
type outsideDir struct {
	dir, file string
	dirSt     unix.Stat_t
	fileSt    unix.Stat_t
}

func newOutsideDir(t *testing.T) *outsideDir {
	t.Helper()
	o := &outsideDir{dir: t.TempDir()}
	o.file = filepath.Join(o.dir, "secret")
	if err := os.WriteFile(o.file, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1500000000, 0)
	os.Chtimes(o.file, old, old)
	os.Chtimes(o.dir, old, old)
	o.dirSt, o.fileSt = lstat(t, o.dir), lstat(t, o.file)
	return o
}

func (o *outsideDir) assertUntouched(t *testing.T) {
	t.Helper()
	if data, err := os.ReadFile(o.file); err != nil || string(data) != "secret" {
		t.Errorf("file outside the layer: %q %v", data, err)
	}
	for p, was := range map[string]unix.Stat_t{o.dir: o.dirSt, o.file: o.fileSt} {
		now := lstat(t, p)
		if now.Mode != was.Mode || now.Uid != was.Uid || now.Gid != was.Gid || now.Mtim != was.Mtim || now.Nlink != was.Nlink {
			t.Errorf("%s outside the layer changed: mode %o->%o owner %d:%d->%d:%d mtime %v->%v nlink %d->%d", p,
				was.Mode, now.Mode, was.Uid, was.Gid, now.Uid, now.Gid, was.Mtim, now.Mtim, was.Nlink, now.Nlink)
		}
	}
	if entries, _ := os.ReadDir(o.dir); len(entries) != 1 {
		t.Errorf("entries appeared outside the layer: %v", entries)
	}
	var xattrs [64]byte
	if n, _ := unix.Llistxattr(o.dir, xattrs[:]); n > 0 {
		t.Errorf("xattrs appeared on the directory outside: %q", xattrs[:n])
	}
}

// TestUnpackEntriesOverEscapingSymlinks: an entry whose name is a symlink
// the layer made earlier (pointing outside) replaces the symlink; no type
// of entry writes, chmods, chowns, links or marks through it.
func TestUnpackEntriesOverEscapingSymlinks(t *testing.T) {
	roottest.Require(t)
	o := newOutsideDir(t)
	// Over esc the symlink is replaced; below escdir RESOLVE_IN_ROOT finds
	// no such directory inside the layer, and the entry is refused.
	for name, c := range map[string]struct {
		last     entry
		replaces bool
	}{
		"file":            {entry{name: "esc", body: "x", typ: tar.TypeReg, mode: 0o4777, uid: 1000}, true},
		"dir":             {entry{name: "esc/", typ: tar.TypeDir, mode: 0o777, uid: 1000, xattrs: map[string]string{"user.x": "y"}}, true},
		"symlink":         {entry{name: "esc", link: "elsewhere", typ: tar.TypeSymlink, uid: 1000}, true},
		"fifo":            {entry{name: "esc", typ: tar.TypeFifo, mode: 0o666}, true},
		"hard link":       {entry{name: "esc", link: "f", typ: tar.TypeLink}, true},
		"whiteout":        {entry{name: ".wh.esc", typ: tar.TypeReg}, true},
		"opaque below":    {entry{name: "escdir/.wh..wh..opq", typ: tar.TypeReg}, false},
		"whiteout below":  {entry{name: "escdir/.wh.secret", typ: tar.TypeReg}, false},
		"dir below":       {entry{name: "escdir/sub/", typ: tar.TypeDir, mode: 0o777}, false},
		"file below":      {entry{name: "escdir/secret", body: "x", typ: tar.TypeReg, mode: 0o644}, false},
		"hard link below": {entry{name: "escdir/l", link: "f", typ: tar.TypeLink}, false},
	} {
		t.Run(name, func(t *testing.T) {
			layer, _, err := unpackDir(t, tarOf(t,
				file("f", "in the layer"),
				entry{name: "esc", link: o.file, typ: tar.TypeSymlink},
				entry{name: "escdir", link: "../../../../../../../.." + o.dir, typ: tar.TypeSymlink},
				c.last,
			), UnpackOptions{})
			switch {
			case !c.replaces && !errors.Is(err, errdefs.ErrInvalidArgument):
				t.Errorf("error %v, want InvalidArgument", err)
			case c.replaces && err != nil:
				t.Errorf("error %v, want the symlink replaced", err)
			case c.replaces:
				st := lstat(t, filepath.Join(layer, "esc"))
				target, _ := os.Readlink(filepath.Join(layer, "esc"))
				if st.Mode&unix.S_IFMT == unix.S_IFLNK && target != "elsewhere" {
					t.Errorf("esc is still the symlink to %s", target)
				}
			}
			o.assertUntouched(t)
		})
	}
}

// TestUnpackHardLinkThroughInsideSymlink: a hard link names its target
// exactly; even a symlink that stays inside the layer is not followed.
func TestUnpackHardLinkThroughInsideSymlink(t *testing.T) {
	roottest.Require(t)
	_, _, err := unpackDir(t, tarOf(t,
		file("real/f", "data"),
		entry{name: "alias", link: "real", typ: tar.TypeSymlink},
		entry{name: "l", link: "alias/f", typ: tar.TypeLink},
	), UnpackOptions{})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("hard link through a symlink: %v, want InvalidArgument", err)
	}
}
