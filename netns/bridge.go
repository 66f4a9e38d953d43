package netns

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DeleteBridge sets the host bridge device name down and deletes it (the
// bridge plugin creates it on first use and leaves it when the last pod
// goes). For node clean-up and tests; a missing bridge is not an error.
func DeleteBridge(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	defer unix.Close(fd)
	if err := setLinkFlags(fd, name, 0, unix.IFF_UP); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	cname, err := unix.BytePtrFromString(name)
	if err != nil {
		return fmt.Errorf("delete bridge %q: %w", name, err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCBRDELBR, uintptr(unsafe.Pointer(cname))); errno != 0 && errno != unix.ENXIO {
		return fmt.Errorf("delete bridge %s: %w", name, errno)
	}
	return nil
}

// setLinkFlags sets and clears interface flags of the link name in the
// network namespace of the socket fd.
func setLinkFlags(fd int, name string, set, clear uint16) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16()&^clear | set)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set flags of %s: %w", name, err)
	}
	return nil
}
