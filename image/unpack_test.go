package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// tarOf writes headers (with bodies for regular files) into a tar stream.
func tarOf(t testing.TB, entries ...entry) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			ModTime: time.Unix(1600000000, 0), Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if e.typ == tar.TypeChar {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return bytes.NewReader(buf.Bytes())
}

func unpackDir(t *testing.T, r io.Reader, o UnpackOptions) (string, UnpackStats, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := Unpack(context.Background(), r, dir, o)
	return dir, st, err
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func TestUnpackMetadata(t *testing.T) {
	roottest.Require(t)
	dir, stats, err := unpackDir(t, tarOf(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o711, uid: 5, gid: 6},
		entry{name: "bin/su", body: "suid", typ: tar.TypeReg, mode: 0o4755},
		entry{name: "bin/sg", link: "bin/su", typ: tar.TypeLink}, // mode 0 in the header, as some builders write
		entry{name: "home/user/file", body: "data", typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1001,
			xattrs: map[string]string{"user.foo": "bar", "trusted.overlay.opaque": "y"}},
		entry{name: "bin/sh", link: "su", typ: tar.TypeSymlink, mode: 0o777, uid: 7},
		entry{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620},
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		entry{name: "empty/", typ: tar.TypeDir, mode: 0o700},
		entry{name: "lower/.wh.gone", typ: tar.TypeReg},
		entry{name: "opq/.wh..wh..opq", typ: tar.TypeReg},
	), UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(dir, "bin/su")); st.Mode != unix.S_IFREG|0o4755 || st.Uid != 0 {
		t.Errorf("setuid file: mode %o", st.Mode)
	}
	su, sg := lstat(t, filepath.Join(dir, "bin/su")), lstat(t, filepath.Join(dir, "bin/sg"))
	if su.Ino != sg.Ino || sg.Mode&0o7777 != 0o4755 {
		t.Errorf("hard link: inode %d/%d mode %o (a mode-0 link header must not change the target)", su.Ino, sg.Ino, sg.Mode)
	}
	if st := lstat(t, filepath.Join(dir, "home/user/file")); st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o7777 != 0o640 || st.Mtim.Sec != 1600000000 {
		t.Errorf("owned file: %d:%d %o mtime %d", st.Uid, st.Gid, st.Mode, st.Mtim.Sec)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "home/user/file"), "user.foo", buf); err != nil || string(buf[:n]) != "bar" {
		t.Errorf("xattr user.foo: %q %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(dir, "home/user/file"), "trusted.overlay.opaque", buf); err == nil {
		t.Error("an overlay xattr from the layer was applied: it could forge whiteouts")
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "su" {
		t.Errorf("symlink: %q %v", target, err)
	}
	if st := lstat(t, filepath.Join(dir, "bin/sh")); st.Uid != 7 {
		t.Errorf("symlink owner %d, want 7", st.Uid)
	}
	if st := lstat(t, filepath.Join(dir, "run/fifo")); st.Mode != unix.S_IFIFO|0o620 {
		t.Errorf("fifo mode %o", st.Mode)
	}
	if _, err := os.Lstat(filepath.Join(dir, "dev/null")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device node was created: %v", err)
	}
	if st := lstat(t, filepath.Join(dir, "bin")); st.Mode != unix.S_IFDIR|0o711 || st.Uid != 5 || st.Mtim.Sec != 1600000000 {
		t.Errorf("dir bin: mode %o uid %d mtime %d (set after its children?)", st.Mode, st.Uid, st.Mtim.Sec)
	}
	if st := lstat(t, filepath.Join(dir, "empty")); st.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("empty dir: %o", st.Mode)
	}
	if st := lstat(t, filepath.Join(dir, "lower/gone")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d, want a 0/0 char device", st.Mode, st.Rdev)
	}
	if n, err := unix.Lgetxattr(filepath.Join(dir, "opq"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque dir: %q %v", buf[:n], err)
	}
	if stats.Bytes != 8 || stats.Inodes < 12 {
		t.Errorf("stats %+v", stats)
	}
}

// TestUnpackSymlinksStayInside: entries written through symlinks the layer
// made resolve inside the layer (RESOLVE_IN_ROOT), never outside; a symlink
// that leads nowhere inside the layer makes the entry fail.
func TestUnpackSymlinksStayInside(t *testing.T) {
	roottest.Require(t)
	outside := t.TempDir()
	sentinel := filepath.Join(outside, "sentinel")
	os.WriteFile(sentinel, []byte("untouched"), 0o644)
	inside := entry{name: strings.TrimPrefix(outside, "/") + "/", typ: tar.TypeDir, mode: 0o755}
	dir, _, err := unpackDir(t, tarOf(t,
		inside,
		entry{name: "abs", link: outside, typ: tar.TypeSymlink},
		entry{name: "abs/sentinel", body: "written inside", typ: tar.TypeReg, mode: 0o644},
		entry{name: "up", link: "../../../../../../../../" + strings.TrimPrefix(outside, "/"), typ: tar.TypeSymlink},
		entry{name: "up/new", body: "created inside", typ: tar.TypeReg, mode: 0o644},
		entry{name: "up/sub/", typ: tar.TypeDir, mode: 0o755},
	), UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{outside + "/sentinel", outside + "/new", outside + "/sub"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s not inside the layer: %v", p, err)
		}
	}
	for _, via := range []string{outside, "../../../../../../" + outside} {
		_, _, err := unpackDir(t, tarOf(t,
			entry{name: "link", link: via, typ: tar.TypeSymlink},
			entry{name: "link/sentinel", body: "overwritten?", typ: tar.TypeReg, mode: 0o644},
		), UnpackOptions{})
		if err == nil {
			t.Errorf("write through a symlink to %s, missing in the layer, succeeded", via)
		}
	}
	if data, _ := os.ReadFile(sentinel); string(data) != "untouched" {
		t.Errorf("a file outside the layer was written: %q", data)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("entries appeared outside the layer: %v", entries)
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	roottest.Require(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600)
	for name, entries := range map[string][]entry{
		"absolute name":        {file("/etc/passwd", "x")},
		"dot-dot name":         {file("../escape", "x")},
		"dot-dot inside":       {dir("a"), file("a/../../escape", "x")},
		"hard link out":        {{name: "l", link: "../../../../" + outside + "/secret", typ: tar.TypeLink}},
		"hard link absolute":   {{name: "l", link: outside + "/secret", typ: tar.TypeLink}},
		"hard link via link":   {{name: "s", link: outside, typ: tar.TypeSymlink}, {name: "l", link: "s/secret", typ: tar.TypeLink}},
		"hard link to dir":     {dir("d"), {name: "l", link: "d", typ: tar.TypeLink}},
		"hard link to nothing": {{name: "l", link: "missing", typ: tar.TypeLink}},
	} {
		_, _, err := unpackDir(t, tarOf(t, entries...), UnpackOptions{})
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("entries appeared outside: %v", entries)
	}
}

func TestUnpackLimits(t *testing.T) {
	roottest.Require(t)
	big := strings.Repeat("x", 1000)
	_, _, err := unpackDir(t, tarOf(t, file("a", big), file("b", big)), UnpackOptions{MaxBytes: 1500})
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("content over MaxBytes: %v", err)
	}
	_, _, err = unpackDir(t, tarOf(t, file("a", ""), file("b", ""), file("c", "")), UnpackOptions{MaxEntries: 2})
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("entries over MaxEntries: %v", err)
	}
	// A header claiming a huge file is refused before any byte is written.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
	tw.Flush()
	endless := io.MultiReader(bytes.NewReader(buf.Bytes()), zeros{})
	if _, _, err := unpackDir(t, endless, UnpackOptions{}); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("1 TiB file: %v", err)
	}
	// Garbage and truncated streams fail; none of this panics.
	garbage := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	if _, _, err := unpackDir(t, bytes.NewReader(garbage), UnpackOptions{}); err == nil {
		t.Error("garbage unpacked without error")
	}
	whole := tarOf(t, file("a", big))
	cut := io.LimitReader(whole, 700)
	if _, _, err := unpackDir(t, cut, UnpackOptions{}); err == nil {
		t.Error("truncated stream unpacked without error")
	}
	// An endless stream stops with the context.
	var hdr bytes.Buffer
	tw = tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Name: "endless", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 30})
	tw.Flush()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Unpack(ctx, io.MultiReader(&hdr, slowZeros{}), t.TempDir(), UnpackOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("endless stream: %v, want the context's deadline", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// slowZeros is a stream that trickles forever.
type slowZeros struct{}

func (slowZeros) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	n := min(len(p), 512)
	clear(p[:n])
	return n, nil
}

func TestUnpackReplacesEntries(t *testing.T) {
	roottest.Require(t)
	dir, _, err := unpackDir(t, tarOf(t,
		file("x", "first"), file("x", "second"),
		dir("d"), file("d/inner", "1"), file("d", "file over dir"),
		file("f", "file"), dir("f"),
		entry{name: "keep/", typ: tar.TypeDir, mode: 0o755}, file("keep/child", "c"), entry{name: "keep/", typ: tar.TypeDir, mode: 0o700},
	), UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "x")); string(data) != "second" {
		t.Errorf("x = %q", data)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "d")); string(data) != "file over dir" {
		t.Errorf("d = %q", data)
	}
	if st := lstat(t, filepath.Join(dir, "f")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("f: mode %o, want a dir", st.Mode)
	}
	if st := lstat(t, filepath.Join(dir, "keep")); st.Mode&0o777 != 0o700 {
		t.Errorf("keep: mode %o, want the later entry's 0700", st.Mode)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep/child")); err != nil {
		t.Errorf("a dir entry over a dir dropped its children: %v", err)
	}
}

func BenchmarkUnpack(b *testing.B) {
	var entries []entry
	chunk := strings.Repeat("0123456789abcdef", 1<<12) // 64 KiB
	for i := range 400 {
		entries = append(entries, entry{name: "d" + string(rune('a'+i%20)) + "/f" + strings.Repeat("x", i%7) + string(rune('a'+i/20)), body: chunk[:(i%16+1)<<12], typ: tar.TypeReg, mode: 0o644})
	}
	data, _ := io.ReadAll(tarOf(b, entries...))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		d := b.TempDir()
		if _, err := Unpack(context.Background(), bytes.NewReader(data), d, UnpackOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzUnpack: no byte stream makes Unpack panic or write outside its
// directory (go test -fuzz FuzzUnpack ./image; the seeds run with the tests).
func FuzzUnpack(f *testing.F) {
	for _, entries := range [][]entry{
		{dir("a"), file("a/b", "x"), {name: "l", link: "a/b", typ: tar.TypeLink}},
		{{name: "s", link: "/", typ: tar.TypeSymlink}, file("s/etc/x", "y")},
		{file("d/.wh..wh..opq", ""), file("d/.wh.gone", ""), {name: "p", typ: tar.TypeFifo, mode: 0o644}},
	} {
		data, _ := io.ReadAll(tarOf(f, entries...))
		f.Add(data)
	}
	outside := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := filepath.Join(t.TempDir(), "layer")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _ = Unpack(context.Background(), bytes.NewReader(data), dir, UnpackOptions{MaxBytes: 1 << 20, MaxEntries: 1000})
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("something was written outside the layer: %v", entries)
		}
	})
}
