package container

import (
	"fmt"
	"os"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountfd"
)

// mountOpts is a spec mount's option list split into what the new mount API
// takes separately: per-mount attributes (for the top mount, and recursive
// ones for every mount of a bind's tree), propagation, bind-ness and the
// file-system parameters that go to fsconfig.
type mountOpts struct {
	attrSet, attrClr       uint64
	recAttrSet, recAttrClr uint64 // "rro", "rnosuid", ...: the whole tree
	propagation            uint64 // MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_UNBINDABLE or 0
	recursiveProp          bool
	bind, rbind            bool
	fsParams               []string // "mode=755", "newinstance"
}

// mountAttrOptions maps an option to the mount attribute it sets or clears.
// The same name with an "r" in front ("rro", "rnosuid") applies it to every
// mount of a recursive bind, not only to the top one (runc's semantics: a
// plain "ro" on an rbind leaves the submounts as they are).
var mountAttrOptions = map[string]struct {
	attr uint64
	set  bool
}{
	"ro": {unix.MOUNT_ATTR_RDONLY, true}, "rw": {unix.MOUNT_ATTR_RDONLY, false},
	"nosuid": {unix.MOUNT_ATTR_NOSUID, true}, "suid": {unix.MOUNT_ATTR_NOSUID, false},
	"nodev": {unix.MOUNT_ATTR_NODEV, true}, "dev": {unix.MOUNT_ATTR_NODEV, false},
	"noexec": {unix.MOUNT_ATTR_NOEXEC, true}, "exec": {unix.MOUNT_ATTR_NOEXEC, false},
	"noatime": {unix.MOUNT_ATTR_NOATIME, true}, "strictatime": {unix.MOUNT_ATTR_STRICTATIME, true},
	"relatime": {unix.MOUNT_ATTR_RELATIME, true}, "nodiratime": {unix.MOUNT_ATTR_NODIRATIME, true},
}

func parseMountOptions(opts []string) mountOpts {
	var o mountOpts
	for _, opt := range opts {
		if a, ok := mountAttrOptions[opt]; ok {
			if a.set {
				o.attrSet |= a.attr
			} else {
				o.attrClr |= a.attr
			}
			continue
		}
		if a, ok := mountAttrOptions[strings.TrimPrefix(opt, "r")]; ok && opt[0] == 'r' {
			if a.set {
				o.recAttrSet |= a.attr
			} else {
				o.recAttrClr |= a.attr
			}
			continue
		}
		switch opt {
		case "bind":
			o.bind = true
		case "rbind":
			o.bind, o.rbind = true, true
		case "private", "rprivate":
			o.propagation, o.recursiveProp = unix.MS_PRIVATE, opt[0] == 'r'
		case "slave", "rslave":
			o.propagation, o.recursiveProp = unix.MS_SLAVE, opt[0] == 'r'
		case "shared", "rshared":
			o.propagation, o.recursiveProp = unix.MS_SHARED, opt[0] == 'r'
		case "unbindable", "runbindable":
			o.propagation, o.recursiveProp = unix.MS_UNBINDABLE, opt[0] == 'r'
		case "atime", "diratime", "async", "defaults", "nostrictatime", "norelatime":
			// Defaults of the new mount API already.
		default:
			o.fsParams = append(o.fsParams, opt)
		}
	}
	// The atime attributes form one field: keep only the last one named.
	if o.attrSet&unix.MOUNT_ATTR__ATIME != 0 {
		o.attrClr |= unix.MOUNT_ATTR__ATIME
	}
	if o.recAttrSet&unix.MOUNT_ATTR__ATIME != 0 {
		o.recAttrClr |= unix.MOUNT_ATTR__ATIME
	}
	return o
}

// isBind reports whether m is a bind mount (of a host path).
func isBind(m specs.Mount) bool { return m.Type == "bind" || parseMountOptions(m.Options).bind }

// bindSource makes the source of bind mount m: a detached copy of the tree
// at m.Source (recursive for rbind) with the mount's attributes, idmapped
// with userNS (the container's user namespace) when the mount carries id
// mappings. The supervisor makes it, outside the container's namespaces:
// from inside a user namespace the source may be out of reach, and only the
// host's root may idmap a mount of the host's file systems.
func bindSource(m specs.Mount, userNS *os.File) (*os.File, error) {
	o := parseMountOptions(m.Options)
	mfd, err := mountfd.Clone(m.Source, o.rbind)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	src := os.NewFile(uintptr(mfd), m.Source)
	if len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0 {
		if userNS == nil {
			src.Close()
			return nil, fmt.Errorf("mount %s has id mappings but the container has no user namespace: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
		if err := mountfd.Idmap(mfd, userNS, o.rbind); err != nil {
			src.Close()
			return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
		}
	}
	// The tree's attributes first, then the top mount's own.
	if err := mountfd.SetAttr(mfd, o.recAttrSet, o.recAttrClr, 0, true); err != nil {
		src.Close()
		return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	if err := mountfd.SetAttr(mfd, o.attrSet, o.attrClr, 0, false); err != nil {
		src.Close()
		return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	return src, nil
}

// mountSpec performs one spec mount inside root: its target is resolved (and
// created, a directory or a file like its source) in the rootfs, and the
// mount attached on the target's descriptor. A bind's source comes prepared
// (bindSource); any other file system is made here.
func mountSpec(root *os.File, m specs.Mount, src *os.File) error {
	o := parseMountOptions(m.Options)
	var mfd int
	srcIsDir := true
	if isBind(m) {
		if src == nil {
			return fmt.Errorf("mount %s: no prepared source for %s", m.Destination, m.Source)
		}
		mfd, srcIsDir = int(src.Fd()), isDirFD(src)
	} else {
		var err error
		if mfd, err = mountfd.New(m.Type, m.Source, o.fsParams, o.attrSet|o.recAttrSet); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		defer unix.Close(mfd)
	}
	var target *os.File
	var err error
	if srcIsDir {
		target, err = mkdirInRoot(root, m.Destination)
	} else {
		target, err = mkfileInRoot(root, m.Destination)
	}
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	defer target.Close()
	if err := mountfd.Attach(mfd, target); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	if err := mountfd.SetAttr(mfd, 0, 0, o.propagation, o.recursiveProp); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	return nil
}
