package images

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// layer writes a layer tar in memory. The first error sticks and is returned
// by v1, so that building code reads as a list of entries.
type layer struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	err  error
	dirs map[string]bool // written already
	// files are the headers of regular files written, by name: a hard link
	// repeats its target's mode and owner, since some unpackers (containerd)
	// apply a link entry's mode to the shared inode.
	files map[string]*tar.Header
	once  sync.Once
	v1l   v1.Layer
}

func newLayer() *layer {
	l := &layer{dirs: map[string]bool{}, files: map[string]*tar.Header{}}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

func (l *layer) header(h *tar.Header) {
	if l.err != nil {
		return
	}
	h.ModTime = created
	h.Format = tar.FormatPAX
	if h.Uname == "" && h.Uid == 0 {
		h.Uname, h.Gname = "root", "root"
	}
	l.err = l.tw.WriteHeader(h)
}

func (l *layer) dir(name string, mode int64, uid, gid int) {
	if l.dirs[name] {
		return
	}
	l.dirs[name] = true
	l.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid})
}

func (l *layer) file(name string, mode int64, data []byte) {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}
	l.files[name] = h
	l.header(h)
	if l.err == nil {
		_, l.err = l.tw.Write(data)
	}
}

// copy adds the host file src (symlinks followed) as name.
func (l *layer) copy(name string, mode int64, src string) {
	if l.err != nil {
		return
	}
	data, err := readFile(src)
	if err != nil {
		l.err = err
		return
	}
	l.file(name, mode, data)
}

// link adds name as a hard link to target, an earlier entry of this layer.
func (l *layer) link(name, target string) {
	h := &tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}
	if t := l.files[target]; t != nil {
		h.Mode, h.Uid, h.Gid = t.Mode, t.Uid, t.Gid
	} else if l.err == nil {
		l.err = fmt.Errorf("hard link %s: target %s is not a file of this layer", name, target)
	}
	l.header(h)
}

// dynamic adds the host's dynamically linked program src as name (mode
// 0755), with its loader and the libraries it needs.
func (l *layer) dynamic(name, src string) {
	if l.err != nil {
		return
	}
	libs, err := sharedLibraries(src)
	if err != nil {
		l.err = err
		return
	}
	l.parents(name)
	l.copy(name, 0o755, src)
	for _, lib := range libs {
		if l.files[lib.name] == nil {
			l.parents(lib.name)
			l.copy(lib.name, 0o755, lib.host)
		}
	}
}

// parents adds the missing parent directories of name, root-owned 0755.
func (l *layer) parents(name string) {
	for i := range len(name) {
		if name[i] == '/' {
			l.dir(name[:i], 0o755, 0, 0)
		}
	}
}

// v1 finishes the tar (once; layers are shared between images).
func (l *layer) v1() (v1.Layer, error) {
	l.once.Do(func() {
		if l.err == nil {
			l.err = l.tw.Close()
		}
		if l.err != nil {
			return
		}
		data := l.buf.Bytes()
		l.v1l, l.err = tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
	})
	return l.v1l, l.err
}

// Files of upstream's busybox image, which critest's users come from
// (nobody for RunAsUsername, www-data for the image-user specs).
const (
	passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
)

// baseLayer is the busybox root file system every image but pause starts
// from. Applets are hard links, as in upstream's image: a runtime masking
// /bin/ls bind-mounts over that one name, where a symlink would lead it to
// mask /bin/busybox and with it every applet.
func baseLayer(in Inputs) (*layer, error) {
	names, err := applets(in.Busybox)
	if err != nil {
		return nil, err
	}
	l := newLayer()
	for _, d := range []string{"bin", "dev", "etc", "home", "lib", "proc", "sys", "usr", "usr/bin", "usr/sbin",
		"usr/local", "usr/local/bin", "var", "var/run", "var/spool", "var/spool/mail", "var/www"} {
		l.dir(d, 0o755, 0, 0)
	}
	l.dir("root", 0o700, 0, 0)
	l.dir("tmp", 0o1777, 0, 0)
	l.file("etc/passwd", 0o644, []byte(passwd))
	l.file("etc/group", 0o644, []byte(group))

	l.copy("bin/busybox", 0o755, in.Busybox)
	for _, a := range names {
		switch a {
		case "busybox", "sh", "ash":
			continue
		}
		l.link("bin/"+a, "bin/busybox")
	}
	l.dynamic("bin/sh", in.Shell)
	l.link("bin/ash", "bin/sh")
	l.copy("bin/pgrep", 0o755, in.Extra)
	l.link("bin/ipcs", "bin/pgrep")
	return l, l.err
}

// predefinedGroupLayer adds the user and group upstream's
// test-image-predefined-group creates with adduser/addgroup.
func predefinedGroupLayer() *layer {
	l := newLayer()
	l.imageUser("default-user")
	return l
}

// imageUser adds user name (uid and gid 1000, a home directory) in group
// group-defined-in-image (gid 50000) to the upstream busybox users, as the
// supplemental groups specs expect of an image.
func (l *layer) imageUser(name string) {
	l.dir("etc", 0o755, 0, 0)
	l.file("etc/passwd", 0o644, []byte(passwd+name+":x:1000:1000:Linux User,,,:/home/"+name+":/bin/sh\n"))
	l.file("etc/group", 0o644, []byte(group+name+":x:1000:\ngroup-defined-in-image:x:50000:"+name+"\n"))
	l.dir("home", 0o755, 0, 0)
	l.dir("home/"+name, 0o755, 1000, 1000)
}

// markerLayer holds one empty file at /name.
func markerLayer(name string) *layer {
	l := newLayer()
	l.file(name, 0o644, nil)
	return l
}

// programLayer holds the host program src at name with mode.
func programLayer(src, name string, mode int64) *layer {
	l := newLayer()
	l.parents(name)
	l.copy(name, mode, src)
	return l
}

type sharedLib struct {
	name string // in the image, no leading slash
	host string
}

// libDirs are where the host's dynamic loader finds libraries and where
// they are put in the image (Debian's multiarch directory).
var libDirs = map[string]string{"amd64": "lib/x86_64-linux-gnu", "arm64": "lib/aarch64-linux-gnu"}

// sharedLibraries lists the dynamic loader and the libraries the ELF
// program needs, directly or through another library, at the paths they
// take in the image.
func sharedLibraries(program string) ([]sharedLib, error) {
	f, err := elf.Open(program)
	if err != nil {
		return nil, fmt.Errorf("program %s: %w", program, err)
	}
	defer f.Close()
	var libs []sharedLib
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		interp, err := io.ReadAll(p.Open())
		if err != nil {
			return nil, fmt.Errorf("program %s: interpreter: %w", program, err)
		}
		host := strings.TrimRight(string(interp), "\x00")
		libs = append(libs, sharedLib{name: strings.TrimPrefix(host, "/"), host: host})
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("program %s: %w", program, err)
	}
	dir, ok := libDirs[runtime.GOARCH]
	if !ok && len(needed) > 0 {
		return nil, fmt.Errorf("program %s: no library directory known for %s", program, runtime.GOARCH)
	}
	seen := map[string]bool{}
	for len(needed) > 0 {
		n := needed[0]
		needed = needed[1:]
		if seen[n] {
			continue
		}
		seen[n] = true
		host, err := findLibrary(n)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", program, err)
		}
		libs = append(libs, sharedLib{name: path.Join(dir, n), host: host})
		lib, err := elf.Open(host)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", program, err)
		}
		more, err := lib.ImportedLibraries()
		lib.Close()
		if err != nil {
			return nil, fmt.Errorf("program %s: %s: %w", program, host, err)
		}
		needed = append(needed, more...)
	}
	return libs, nil
}

func findLibrary(name string) (string, error) {
	for _, d := range []string{"/" + libDirs[runtime.GOARCH], "/usr/" + libDirs[runtime.GOARCH], "/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
		p := filepath.Join(d, name)
		if _, err := filepath.EvalSymlinks(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s not found on this host", name)
}
