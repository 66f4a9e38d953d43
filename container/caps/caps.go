// Package caps names Linux capabilities the way OCI specs do ("CAP_CHOWN") and
// applies a spec's five capability sets to the calling OS thread, in the order
// the kernel requires: the bounding set is trimmed while CAP_SETPCAP is still
// effective, keepcaps carries the permitted set across the switch to the
// container's user, and only then are the effective, permitted, inheritable
// and ambient sets installed.
package caps

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Cap is a capability number as the kernel counts them (CAP_CHOWN is 0).
type Cap int

// names is indexed by capability number; it covers every capability Linux
// defines up to CAP_CHECKPOINT_RESTORE (40).
var names = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

var byName = func() map[string]Cap {
	m := make(map[string]Cap, len(names))
	for i, n := range names {
		m[n] = Cap(i)
	}
	return m
}()

// String returns the OCI name, or CAP_<n> for a number newer than this table.
func (c Cap) String() string {
	if c >= 0 && int(c) < len(names) {
		return names[c]
	}
	return "CAP_" + strconv.Itoa(int(c))
}

// FromName returns the capability called name ("CAP_NET_RAW").
func FromName(name string) (Cap, error) {
	c, ok := byName[name]
	if !ok {
		return 0, fmt.Errorf("unknown capability %q: %w", name, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// Parse converts OCI capability names to numbers; the first unknown name is
// an ErrInvalidArgument that says which.
func Parse(names []string) ([]Cap, error) {
	out := make([]Cap, 0, len(names))
	for _, n := range names {
		c, err := FromName(n)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// DefaultSet returns the 14 capabilities a container gets unless its
// configuration says otherwise (the set containerd and CRI-O use).
func DefaultSet() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
		"CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
		"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
}

// Last returns the highest capability number the running kernel knows.
var Last = sync.OnceValue(func() Cap {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && n >= 0 {
			return Cap(n)
		}
	}
	// Without /proc, assume the kernel knows what this table knows.
	return Cap(len(names) - 1)
})

// All returns the names of every capability the running kernel knows
// (what a privileged container gets), limited to the ones this package can
// name so that the result always parses.
func All() []string {
	last := min(int(Last()), len(names)-1)
	return append([]string(nil), names[:last+1]...)
}

// Held returns the names of the capabilities in the calling thread's
// permitted set: all a privileged container can be given, which is less
// than All when the runtime itself runs with a reduced bounding set (as
// here, without CAP_SYS_RESOURCE).
func Held() ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("read own capabilities: %w", err)
	}
	permitted := uint64(data[1].Permitted)<<32 | uint64(data[0].Permitted)
	var held []string
	for _, n := range All() {
		c, _ := FromName(n)
		if permitted&(1<<uint(c)) != 0 {
			held = append(held, n)
		}
	}
	return held, nil
}

// Mask returns the kernel bit mask of the named capabilities, as
// /proc/<pid>/status prints them.
func Mask(set []string) (uint64, error) {
	cs, err := Parse(set)
	if err != nil {
		return 0, err
	}
	var m uint64
	for _, c := range cs {
		m |= 1 << uint(c)
	}
	return m, nil
}

// Apply installs c on the calling OS thread, which the caller must have
// locked (runtime.LockOSThread) and which should exec soon after: capability
// sets are per thread. setUser, if not nil, switches to the container's
// user and groups in between, so that the permitted set survives the uid
// change. A nil c changes no capability (as runc does) but still calls
// setUser. Names are checked before anything changes.
func Apply(c *specs.LinuxCapabilities, setUser func() error) error {
	if c == nil {
		if setUser != nil {
			return setUser()
		}
		return nil
	}
	var m [5]uint64
	for i, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
		var err error
		if m[i], err = Mask(set); err != nil {
			return err
		}
	}
	bounding, effective, permitted, inheritable, ambient := m[0], m[1], m[2], m[3], m[4]

	for cp := Cap(0); cp <= Last(); cp++ {
		if bounding&(1<<uint(cp)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(cp), 0, 0, 0); err != nil {
			// EINVAL: the kernel does not know this capability; nothing to drop.
			if err == unix.EINVAL {
				continue
			}
			return fmt.Errorf("drop %s from the bounding set: %w", cp, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set keepcaps: %w", err)
	}
	if setUser != nil {
		if err := setUser(); err != nil {
			return err
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		data[i].Effective = uint32(effective >> (32 * i))
		data[i].Permitted = uint32(permitted >> (32 * i))
		data[i].Inheritable = uint32(inheritable >> (32 * i))
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set capabilities (effective %#x, permitted %#x, inheritable %#x): %w",
			effective, permitted, inheritable, err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for cp := Cap(0); cp < 64; cp++ {
		if ambient&(1<<uint(cp)) == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(cp), 0, 0); err != nil {
			return fmt.Errorf("raise ambient %s (it must be permitted and inheritable): %w", cp, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("clear keepcaps: %w", err)
	}
	return nil
}
