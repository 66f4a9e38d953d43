package cgroups

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// DefaultDevices are the device rules of a non-privileged container: no
// device may be used except the ones the recipe creates in /dev (R7, R8)
// and the console; mknod of any node is allowed, as only using it is
// policed.
func DefaultDevices() []specs.LinuxDeviceCgroup {
	dev := func(typ string, major, minor int64, access string) specs.LinuxDeviceCgroup {
		d := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Access: access}
		if major >= 0 {
			d.Major = &major
		}
		if minor >= 0 {
			d.Minor = &minor
		}
		return d
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		dev("c", -1, -1, "m"), dev("b", -1, -1, "m"),
		dev("c", 1, 3, "rwm"), dev("c", 1, 5, "rwm"), dev("c", 1, 7, "rwm"), // null zero full
		dev("c", 1, 8, "rwm"), dev("c", 1, 9, "rwm"), // random urandom
		dev("c", 5, 0, "rwm"), dev("c", 5, 1, "rwm"), dev("c", 5, 2, "rwm"), // tty console ptmx
		dev("c", 136, -1, "rwm"), // pts
	}
}

// deviceAccess checks a rule and returns its type ('a', 'c' or 'b') and
// access as BPF_DEVCG_ACC_* bits.
func deviceAccess(d specs.LinuxDeviceCgroup) (byte, uint32, error) {
	typ := byte('a')
	switch d.Type {
	case "", "a":
	case "c", "b":
		typ = d.Type[0]
	default:
		return 0, 0, fmt.Errorf("device rule type %q: want a, c or b: %w", d.Type, errdefs.ErrInvalidArgument)
	}
	access := d.Access
	if access == "" {
		access = "rwm"
	}
	var bits uint32
	for _, c := range access {
		switch c {
		case 'r':
			bits |= unix.BPF_DEVCG_ACC_READ
		case 'w':
			bits |= unix.BPF_DEVCG_ACC_WRITE
		case 'm':
			bits |= unix.BPF_DEVCG_ACC_MKNOD
		default:
			return 0, 0, fmt.Errorf("device rule access %q: want letters of rwm: %w", d.Access, errdefs.ErrInvalidArgument)
		}
	}
	return typ, bits, nil
}

// ebpf is one eBPF instruction (struct bpf_insn).
type ebpf struct {
	code uint8
	regs uint8 // dst in the low nibble, src in the high one
	off  int16
	imm  int32
}

func insn(code, dst, src uint8, off int16, imm int32) ebpf {
	return ebpf{code: code, regs: dst | src<<4, off: off, imm: imm}
}

// Registers of the device program: r1 holds the context
// (struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor;}).
const (
	r0, r1, rType, rAccess, rMajor, rMinor, rTmp = 0, 1, 2, 3, 4, 5, 6
)

// deviceProgram compiles rules into a BPF_PROG_TYPE_CGROUP_DEVICE program
// with the v1 devices controller's meaning: later rules override earlier
// ones, so they are tested last to first and the first match decides; no
// match denies. An allow rule matches a request whose access it fully
// covers, a deny rule one that asks for any access it names.
func deviceProgram(rules []specs.LinuxDeviceCgroup) ([]ebpf, error) {
	const (
		ldxW   = unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W
		andK   = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
		rshK   = unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K
		movX   = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_X
		movK   = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K
		jneK   = unix.BPF_JMP | unix.BPF_JNE | unix.BPF_K
		jeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		exit   = unix.BPF_JMP | unix.BPF_EXIT
		devBlk = unix.BPF_DEVCG_DEV_BLOCK
		devChr = unix.BPF_DEVCG_DEV_CHAR
	)
	prog := []ebpf{
		insn(ldxW, rType, r1, 0, 0),
		insn(movX, rAccess, rType, 0, 0),
		insn(andK, rType, 0, 0, 0xffff),
		insn(rshK, rAccess, 0, 0, 16),
		insn(ldxW, rMajor, r1, 4, 0),
		insn(ldxW, rMinor, r1, 8, 0),
	}
	for i := len(rules) - 1; i >= 0; i-- {
		d := rules[i]
		typ, access, err := deviceAccess(d)
		if err != nil {
			return nil, err
		}
		// Each test jumps past the rest of the block when it fails; the
		// offsets are filled in once the block's length is known.
		var block []ebpf
		var jumps []int
		test := func(in ebpf) {
			jumps = append(jumps, len(block))
			block = append(block, in)
		}
		switch typ {
		case 'c':
			test(insn(jneK, rType, 0, 0, devChr))
		case 'b':
			test(insn(jneK, rType, 0, 0, devBlk))
		}
		if d.Major != nil && *d.Major >= 0 {
			test(insn(jneK, rMajor, 0, 0, int32(*d.Major)))
		}
		if d.Minor != nil && *d.Minor >= 0 {
			test(insn(jneK, rMinor, 0, 0, int32(*d.Minor)))
		}
		block = append(block, insn(movX, rTmp, rAccess, 0, 0))
		if d.Allow {
			// Matches when the request asks for nothing beyond access.
			block = append(block, insn(andK, rTmp, 0, 0, int32(^access&0x7)))
			test(insn(jneK, rTmp, 0, 0, 0))
		} else {
			block = append(block, insn(andK, rTmp, 0, 0, int32(access)))
			test(insn(jeqK, rTmp, 0, 0, 0))
		}
		verdict := int32(0)
		if d.Allow {
			verdict = 1
		}
		block = append(block, insn(movK, r0, 0, 0, verdict), insn(exit, 0, 0, 0, 0))
		for _, j := range jumps {
			block[j].off = int16(len(block) - j - 1)
		}
		prog = append(prog, block...)
	}
	return append(prog, insn(unix.BPF_ALU64|unix.BPF_MOV|unix.BPF_K, r0, 0, 0, 0), insn(unix.BPF_JMP|unix.BPF_EXIT, 0, 0, 0, 0)), nil
}

// The parts of union bpf_attr the device filter uses.
type progLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
}

type progAttachAttr struct {
	targetFd    uint32
	attachBpfFd uint32
	attachType  uint32
	attachFlags uint32
}

type progQueryAttr struct {
	targetFd    uint32
	attachType  uint32
	queryFlags  uint32
	attachFlags uint32
	progIDs     uint64
	progCnt     uint32
	_           uint32
}

type progGetFdAttr struct {
	progID uint32
	nextID uint32
	flags  uint32
}

// loadProgram loads a device program; with logLevel 1 an error carries the
// verifier's log.
func loadProgram(prog []ebpf, logLevel uint32) (int, error) {
	license := []byte("Apache-2.0\x00")
	var logBuf []byte
	load := progLoadAttr{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(prog)),
		insns:    uint64(uintptr(unsafe.Pointer(&prog[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	if logLevel > 0 {
		logBuf = make([]byte, 1<<20)
		load.logLevel, load.logSize = logLevel, uint32(len(logBuf))
		load.logBuf = uint64(uintptr(unsafe.Pointer(&logBuf[0])))
	}
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&load), unsafe.Sizeof(load))
	runtime.KeepAlive(prog)
	runtime.KeepAlive(license)
	runtime.KeepAlive(logBuf)
	if err != nil && logLevel > 0 {
		log := strings.TrimRight(string(logBuf), "\x00")
		if len(log) > 2000 {
			log = "..." + log[len(log)-2000:]
		}
		return -1, fmt.Errorf("%w: %s", err, log)
	}
	return fd, err
}

// deviceFilters lists the ids of the device programs attached to the
// cgroup open at fd.
func deviceFilters(fd int) ([]uint32, error) {
	ids := make([]uint32, 64)
	query := progQueryAttr{targetFd: uint32(fd), attachType: unix.BPF_CGROUP_DEVICE,
		progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), progCnt: uint32(len(ids))}
	_, err := bpf(unix.BPF_PROG_QUERY, unsafe.Pointer(&query), unsafe.Sizeof(query))
	runtime.KeepAlive(ids)
	if err != nil {
		return nil, err
	}
	return ids[:query.progCnt], nil
}

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// setDeviceFilter replaces the device program attached to the v2 cgroup
// at dir: the new one is attached before the old ones are detached, so
// the cgroup is never left unfiltered.
func setDeviceFilter(dir string, rules []specs.LinuxDeviceCgroup) error {
	prog, err := deviceProgram(rules)
	if err != nil {
		return err
	}
	progFd, err := loadProgram(prog, 0)
	if err != nil {
		// Load again with the verifier's log, to say why. A failure the
		// kernel does not repeat (the verifier interrupted: EAGAIN) leaves
		// the program loaded the second time: use it.
		first := err
		if progFd, err = loadProgram(prog, 1); err != nil {
			return fmt.Errorf("load device filter: %w", err)
		}
		klog.InfoS("Device filter loaded at the second attempt", "cgroup", dir, "err", first)
	}
	defer unix.Close(progFd)

	cg, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	defer unix.Close(cg)
	old, err := deviceFilters(cg)
	if err != nil {
		return fmt.Errorf("list device filters of %s: %w", dir, err)
	}
	attach := progAttachAttr{targetFd: uint32(cg), attachBpfFd: uint32(progFd),
		attachType: unix.BPF_CGROUP_DEVICE, attachFlags: unix.BPF_F_ALLOW_MULTI}
	if _, err := bpf(unix.BPF_PROG_ATTACH, unsafe.Pointer(&attach), unsafe.Sizeof(attach)); err != nil {
		return fmt.Errorf("attach device filter to %s: %w", dir, err)
	}
	var errs []error
	for _, id := range old {
		get := progGetFdAttr{progID: id}
		fd, err := bpf(unix.BPF_PROG_GET_FD_BY_ID, unsafe.Pointer(&get), unsafe.Sizeof(get))
		if err != nil {
			errs = append(errs, fmt.Errorf("old device filter %d: %w", id, err))
			continue
		}
		detach := progAttachAttr{targetFd: uint32(cg), attachBpfFd: uint32(fd), attachType: unix.BPF_CGROUP_DEVICE}
		if _, err := bpf(unix.BPF_PROG_DETACH, unsafe.Pointer(&detach), unsafe.Sizeof(detach)); err != nil {
			errs = append(errs, fmt.Errorf("detach old device filter %d: %w", id, err))
		}
		unix.Close(fd)
	}
	return errors.Join(errs...)
}
