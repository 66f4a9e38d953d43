package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Limits a layer gets when UnpackOptions leaves them zero.
const (
	DefaultMaxLayerBytes   = 64 << 30
	DefaultMaxLayerEntries = 1 << 20
)

// UnpackOptions limit what one layer may do.
type UnpackOptions struct {
	// MaxBytes caps the file content of a layer; 0 means DefaultMaxLayerBytes.
	MaxBytes int64
	// MaxEntries caps the entries of a layer; 0 means DefaultMaxLayerEntries.
	MaxEntries int
}

// UnpackStats say what a layer occupies once unpacked.
type UnpackStats struct {
	Bytes  int64 // file content
	Inodes int64 // entries created
}

const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
	overlayOpaque  = "trusted.overlay.opaque"
)

// Unpack extracts an uncompressed layer tar into dir (existing, empty) in
// overlayfs form: ".wh.NAME" becomes a 0/0 character device NAME and
// ".wh..wh..opq" the opaque xattr on its directory.
//
// The layer is untrusted (recipe R18). Every parent directory is resolved
// with openat2(RESOLVE_IN_ROOT) below dir and every entry made with *at
// calls on that directory, so a symlink the layer made resolves inside dir,
// never outside. Names that are absolute or climb out are refused, as are
// hard links to anything but an earlier non-directory of the layer. Device
// nodes are skipped (a container gets its devices from the runtime), and
// overlay xattrs in the layer are dropped (they would forge whiteouts).
func Unpack(ctx context.Context, r io.Reader, dir string, o UnpackOptions) (UnpackStats, error) {
	o.MaxBytes = o.maxBytes()
	if o.MaxEntries == 0 {
		o.MaxEntries = DefaultMaxLayerEntries
	}
	rootFd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return UnpackStats{}, fmt.Errorf("unpack into %s: %w", dir, err)
	}
	u := &unpacker{root: rootFd, opts: o}
	defer u.close()
	tr := tar.NewReader(&ctxReader{ctx: ctx, r: r})
	for entries := 0; ; entries++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return u.stats, cause // cancelled, not a bad layer
			}
			return u.stats, fmt.Errorf("read layer: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if entries >= o.MaxEntries {
			return u.stats, fmt.Errorf("layer has more than %d entries: %w", o.MaxEntries, errdefs.ErrResourceExhausted)
		}
		if err := u.entry(hdr, tr); err != nil {
			return u.stats, fmt.Errorf("unpack %s: %w", hdr.Name, err)
		}
	}
	if err := u.setDirTimes(); err != nil {
		return u.stats, err
	}
	return u.stats, nil
}

// ctxReader stops a stream when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := context.Cause(c.ctx); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type unpacker struct {
	root  int
	opts  UnpackOptions
	stats UnpackStats
	dirs  []dirTime // applied last: entries created below change them
}

type dirTime struct {
	name  string
	mtime time.Time
}

func (u *unpacker) close() { unix.Close(u.root) }

// cleanName turns a tar entry name into a path relative to the layer root;
// "" is the root itself. Absolute names and names that climb out are refused.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("absolute name: %w", errdefs.ErrInvalidArgument)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("name leaves the layer: %w", errdefs.ErrInvalidArgument)
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// openDir resolves a directory of the layer (RESOLVE_IN_ROOT: symlinks and
// ".." stay below the root), creating missing ones when create is set.
func (u *unpacker) openDir(rel string, create bool) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(u.root, rel, how)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	// A layer may list a file before (or without) its directory.
	parent, base := path.Split(rel)
	pfd, err := u.openDir(strings.TrimSuffix(parent, "/"), true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err == nil {
		u.stats.Inodes++
	} else if !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	return unix.Openat2(u.root, rel, how)
}

// removeExisting clears the name for a new entry; keepDir leaves a
// directory in place (a directory entry over a directory updates it).
func removeExisting(pfd int, base string, keepDir bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(pfd, base, 0)
	}
	if keepDir {
		return nil
	}
	// /proc/self/fd/N names the parent we resolved; RemoveAll follows no symlink below it.
	return os.RemoveAll("/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base)
}

func (u *unpacker) entry(hdr *tar.Header, tr *tar.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	parent, base := path.Split(name)
	parent = strings.TrimSuffix(parent, "/")
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			return u.metadata(u.root, ".", hdr, true)
		}
		return fmt.Errorf("the layer root must be a directory: %w", errdefs.ErrInvalidArgument)
	}
	pfd, err := u.openDir(parent, true)
	if err != nil {
		return fmt.Errorf("parent directory %q does not resolve to a directory inside the layer: %v: %w", parent, err, errdefs.ErrInvalidArgument)
	}
	defer unix.Close(pfd)

	if base == opaqueWhiteout {
		dfd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return unix.Fsetxattr(dfd, overlayOpaque, []byte("y"), 0)
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		hidden := strings.TrimPrefix(base, whiteoutPrefix)
		if hidden == "" || hidden == "." || hidden == ".." {
			return fmt.Errorf("bad whiteout: %w", errdefs.ErrInvalidArgument)
		}
		if err := removeExisting(pfd, hidden, false); err != nil {
			return err
		}
		u.stats.Inodes++
		return unix.Mknodat(pfd, hidden, unix.S_IFCHR, 0)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := removeExisting(pfd, base, true); err != nil {
			return err
		}
		if err := unix.Mkdirat(pfd, base, 0o700); err == nil {
			u.stats.Inodes++
		} else if !errors.Is(err, unix.EEXIST) {
			return err
		}
		return u.metadata(pfd, base, hdr, true)
	case tar.TypeReg:
		if err := removeExisting(pfd, base, false); err != nil {
			return err
		}
		return u.file(pfd, base, hdr, tr)
	case tar.TypeSymlink:
		if err := removeExisting(pfd, base, false); err != nil {
			return err
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return err
		}
		u.stats.Inodes++
		return u.metadata(pfd, base, hdr, false)
	case tar.TypeLink:
		return u.hardLink(pfd, base, hdr)
	case tar.TypeFifo:
		if err := removeExisting(pfd, base, false); err != nil {
			return err
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
			return err
		}
		u.stats.Inodes++
		return u.metadata(pfd, base, hdr, false)
	case tar.TypeChar, tar.TypeBlock:
		klog.InfoS("Skipping a device node in an image layer", "entry", hdr.Name)
		return nil
	default:
		klog.V(2).InfoS("Skipping a tar entry of an unsupported type", "entry", hdr.Name, "type", string(hdr.Typeflag))
		return nil
	}
}

func (o UnpackOptions) maxBytes() int64 {
	if o.MaxBytes == 0 {
		return DefaultMaxLayerBytes
	}
	return o.MaxBytes
}

// contentTooLarge is the failure of a layer whose content passes max bytes.
func contentTooLarge(max int64) error {
	return fmt.Errorf("layer content exceeds %d bytes: %w", max, errdefs.ErrResourceExhausted)
}

// copyBuffers are reused across the layers a pull unpacks at once.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func (u *unpacker) file(pfd int, base string, hdr *tar.Header, tr *tar.Reader) error {
	if hdr.Size < 0 || u.stats.Bytes+hdr.Size > u.opts.MaxBytes {
		return contentTooLarge(u.opts.MaxBytes)
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	u.stats.Inodes++
	buf := copyBuffers.Get().(*[]byte)
	n, err := io.CopyBuffer(onlyWriter{f}, io.LimitReader(tr, hdr.Size), *buf)
	copyBuffers.Put(buf)
	u.stats.Bytes += n
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("file is %d bytes, header says %d: %w", n, hdr.Size, errdefs.ErrInvalidArgument)
	}
	return u.metadata(fd, "", hdr, false)
}

// onlyWriter hides os.File's ReadFrom, so CopyBuffer uses our buffer.
type onlyWriter struct{ io.Writer }

func (u *unpacker) hardLink(pfd int, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil || target == "" {
		return fmt.Errorf("hard link to %q: target outside the layer: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
	}
	// No symlink on the way: a link names an entry of this layer exactly.
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS}
	tfd, err := unix.Openat2(u.root, target, how)
	if err != nil {
		return fmt.Errorf("hard link to %q: %v: %w", hdr.Linkname, err, errdefs.ErrInvalidArgument)
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstat(tfd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hard link to directory %q: %w", hdr.Linkname, errdefs.ErrInvalidArgument)
	}
	if err := removeExisting(pfd, base, false); err != nil {
		return err
	}
	// The link shares the target's inode and metadata: the link entry's own
	// mode and owner (often zero) are not applied.
	return unix.Linkat(tfd, "", pfd, base, unix.AT_EMPTY_PATH)
}

// metadata applies owner, mode, xattrs and times. fd with name "" is the
// entry itself; otherwise name is looked up in the directory fd.
func (u *unpacker) metadata(fd int, name string, hdr *tar.Header, isDir bool) error {
	if hdr.Typeflag == tar.TypeSymlink {
		if err := unix.Fchownat(fd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("owner: %w", err)
		}
		ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
		return unix.UtimesNanoAt(fd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	own := fd
	if name != "" {
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK // a fifo must not block
		var err error
		if own, err = unix.Openat(fd, name, flags, 0); err != nil {
			return err
		}
		defer unix.Close(own)
	}
	// chown before chmod: chown clears setuid and setgid bits.
	if err := unix.Fchown(own, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	if err := unix.Fchmod(own, uint32(hdr.Mode&0o7777)); err != nil {
		return fmt.Errorf("mode: %w", err)
	}
	for key, value := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(key, "SCHILY.xattr.")
		if !ok || strings.HasPrefix(attr, "trusted.overlay.") {
			continue
		}
		if err := unix.Fsetxattr(own, attr, []byte(value), 0); err != nil {
			return fmt.Errorf("xattr %s: %w", attr, err)
		}
	}
	if isDir {
		u.dirs = append(u.dirs, dirTime{name: dirName(hdr.Name), mtime: hdr.ModTime})
		return nil
	}
	tv := []unix.Timeval{unix.NsecToTimeval(hdr.ModTime.UnixNano()), unix.NsecToTimeval(hdr.ModTime.UnixNano())}
	return unix.Futimes(own, tv)
}

func dirName(name string) string {
	clean, _ := cleanName(name)
	return clean
}

// setDirTimes sets directory times last, deepest first: entries created in
// a directory change its times.
func (u *unpacker) setDirTimes() error {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS}
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		name := d.name
		if name == "" {
			name = "."
		}
		// No symlink on the way: a directory a later entry replaced by a
		// symlink must not lend its times to the symlink's target.
		fd, err := unix.Openat2(u.root, name, how)
		if err != nil {
			continue // replaced by a later entry
		}
		ts := []unix.Timespec{unix.NsecToTimespec(d.mtime.UnixNano()), unix.NsecToTimespec(d.mtime.UnixNano())}
		err = unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("times of %s: %w", d.name, err)
		}
	}
	return nil
}
