package seccomp

import (
	"errors"
	"fmt"
	"slices"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Offsets in struct seccomp_data. Arguments are 64-bit little-endian words
// on every architecture handled here; a 32-bit ABI presents them
// zero-extended, so one comparison scheme serves all.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

func argLo(i uint) uint32 { return offArgs + 8*uint32(i) }
func argHi(i uint) uint32 { return offArgs + 8*uint32(i) + 4 }

var errTooLarge = errors.New("filter too large")

// label names a position in the program; jumps are resolved at the end.
type label int

const (
	next  label = -1 // the following instruction
	skip1 label = -2 // the one after it
)

type insn struct {
	code   uint16
	k      uint32
	jt, jf label // conditional jumps
	to     label // BPF_JA
}

// assembler collects instructions with symbolic jumps. Conditional jumps in
// classic BPF reach at most 255 instructions ahead, so the generated code
// only jumps short distances conditionally and uses BPF_JA (32-bit offset)
// to skip whole blocks.
type assembler struct {
	prog []insn
	at   []int
	// linearMax: see tree.
	linearMax int
}

func (a *assembler) newLabel() label {
	a.at = append(a.at, -1)
	return label(len(a.at) - 1)
}

func (a *assembler) mark(l label) { a.at[l] = len(a.prog) }

func (a *assembler) load(off uint32) {
	a.prog = append(a.prog, insn{code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: off})
}

func (a *assembler) and(k uint32) {
	a.prog = append(a.prog, insn{code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, k: k})
}

func (a *assembler) jump(op uint16, k uint32, jt, jf label) {
	a.prog = append(a.prog, insn{code: unix.BPF_JMP | op | unix.BPF_K, k: k, jt: jt, jf: jf})
}

func (a *assembler) jeq(k uint32, jt, jf label) { a.jump(unix.BPF_JEQ, k, jt, jf) }
func (a *assembler) jgt(k uint32, jt, jf label) { a.jump(unix.BPF_JGT, k, jt, jf) }
func (a *assembler) jge(k uint32, jt, jf label) { a.jump(unix.BPF_JGE, k, jt, jf) }

func (a *assembler) ja(to label) {
	a.prog = append(a.prog, insn{code: unix.BPF_JMP | unix.BPF_JA, to: to})
}

func (a *assembler) ret(k uint32) {
	a.prog = append(a.prog, insn{code: unix.BPF_RET | unix.BPF_K, k: k})
}

// offset resolves a jump from pc to l.
func (a *assembler) offset(pc int, l label) (int, error) {
	switch l {
	case next:
		return 0, nil
	case skip1:
		return 1, nil
	}
	if a.at[l] < 0 {
		return 0, fmt.Errorf("seccomp: internal error: label %d never placed", l)
	}
	d := a.at[l] - (pc + 1)
	if d < 0 {
		return 0, fmt.Errorf("seccomp: internal error: backward jump at %d", pc)
	}
	return d, nil
}

func (a *assembler) assemble() ([]unix.SockFilter, error) {
	if len(a.prog) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: profile needs %d BPF instructions, the kernel takes %d: %w: %w",
			len(a.prog), unix.BPF_MAXINSNS, errTooLarge, errdefs.ErrInvalidArgument)
	}
	out := make([]unix.SockFilter, len(a.prog))
	for pc, in := range a.prog {
		out[pc] = unix.SockFilter{Code: in.code, K: in.k}
		switch {
		case in.code == unix.BPF_JMP|unix.BPF_JA:
			d, err := a.offset(pc, in.to)
			if err != nil {
				return nil, err
			}
			out[pc].K = uint32(d)
		case in.code&0x07 == unix.BPF_JMP:
			jt, err := a.offset(pc, in.jt)
			if err != nil {
				return nil, err
			}
			jf, err := a.offset(pc, in.jf)
			if err != nil {
				return nil, err
			}
			if jt > 255 || jf > 255 {
				return nil, fmt.Errorf("seccomp: a rule needs a jump of %d instructions, more than BPF allows: %w",
					max(jt, jf), errdefs.ErrInvalidArgument)
			}
			out[pc].Jt, out[pc].Jf = uint8(jt), uint8(jf)
		}
	}
	return out, nil
}

// opEmitters write a 64-bit comparison of one argument out of 32-bit BPF
// operations: falling through means it holds, jumping to fail that it does
// not. The accumulator is clobbered.
var opEmitters = map[specs.LinuxSeccompOperator]func(a *assembler, c specs.LinuxSeccompArg, fail label){
	specs.OpEqualTo: func(a *assembler, c specs.LinuxSeccompArg, fail label) {
		a.load(argHi(c.Index))
		a.jeq(uint32(c.Value>>32), next, fail)
		a.load(argLo(c.Index))
		a.jeq(uint32(c.Value), next, fail)
	},
	specs.OpNotEqual: func(a *assembler, c specs.LinuxSeccompArg, fail label) {
		pass := a.newLabel()
		a.load(argHi(c.Index))
		a.jeq(uint32(c.Value>>32), next, pass)
		a.load(argLo(c.Index))
		a.jeq(uint32(c.Value), fail, next)
		a.mark(pass)
	},
	specs.OpGreaterThan: func(a *assembler, c specs.LinuxSeccompArg, fail label) {
		a.ordered(c, fail, true, a.jgt)
	},
	specs.OpGreaterEqual: func(a *assembler, c specs.LinuxSeccompArg, fail label) {
		a.ordered(c, fail, true, a.jge)
	},
	specs.OpLessThan: func(a *assembler, c specs.LinuxSeccompArg, fail label) {
		// a < v  <=>  !(a >= v)
		a.ordered(c, fail, false, a.jge)
	},
	specs.OpLessEqual: func(a *assembler, c specs.LinuxSeccompArg, fail label) {
		// a <= v  <=>  !(a > v)
		a.ordered(c, fail, false, a.jgt)
	},
	specs.OpMaskedEqual: func(a *assembler, c specs.LinuxSeccompArg, fail label) {
		// As in libseccomp and runc: Value is the mask, ValueTwo the datum.
		a.load(argHi(c.Index))
		a.and(uint32(c.Value >> 32))
		a.jeq(uint32(c.ValueTwo>>32), next, fail)
		a.load(argLo(c.Index))
		a.and(uint32(c.Value))
		a.jeq(uint32(c.ValueTwo), next, fail)
	},
}

// ordered writes a greater-than family comparison (above) or the less-than
// family (its negation): the high words decide unless equal, then lowOp on
// the low words.
func (a *assembler) ordered(c specs.LinuxSeccompArg, fail label, above bool, lowOp func(uint32, label, label)) {
	pass := a.newLabel()
	hi, lo := uint32(c.Value>>32), uint32(c.Value)
	a.load(argHi(c.Index))
	if above {
		a.jgt(hi, pass, next)
	} else {
		a.jge(hi, next, pass)
	}
	a.jeq(hi, next, fail)
	a.load(argLo(c.Index))
	if above {
		lowOp(lo, next, fail)
	} else {
		lowOp(lo, fail, next)
	}
	a.mark(pass)
}

// syscalls writes the rule chain of one ABI, starting with the syscall
// number in the accumulator, and ends with the default action.
func (a *assembler) syscalls(ar *arch, all []rule, names [][]string, defRet uint32) {
	var order []uint32 // every number with a rule
	byNr := map[uint32][]int{}
	for i := range all {
		for _, n := range names[i] {
			nr, ok := ar.table[n]
			if !ok {
				continue // unknown here: skipped, as runc does
			}
			if ar.x32 {
				nr |= x32SyscallBit
			}
			if _, ok := byNr[nr]; !ok {
				order = append(order, nr)
			}
			if !slices.Contains(byNr[nr], i) {
				byNr[nr] = append(byNr[nr], i)
			}
		}
	}
	slices.Sort(order)
	a.tree(order, func(nr uint32) { a.syscall(nr, all, byNr[nr], defRet) }, defRet)
}

// linearMax is how many syscall numbers tree compares one after the
// other; larger sets are split in halves by number, so a syscall is found
// in about log2(n) comparisons instead of n (the default profile has 400).
const linearMax = 8

// tree dispatches on the syscall number in the accumulator over the
// sorted nrs, emitting each syscall's checks with emit, and ends every
// leaf with the default action.
func (a *assembler) tree(nrs []uint32, emit func(uint32), defRet uint32) {
	if len(nrs) <= a.linearMax {
		for _, nr := range nrs {
			emit(nr)
		}
		a.ret(defRet)
		return
	}
	mid := len(nrs) / 2
	upper := a.newLabel()
	a.jge(nrs[mid], next, skip1)
	a.ja(upper)
	a.tree(nrs[:mid], emit, defRet)
	a.mark(upper)
	a.tree(nrs[mid:], emit, defRet)
}

// syscall emits the checks of one syscall: when the number matches, its
// conditional rules in order, then its unconditional rule or the default.
// Every path that matched the number returns, so the accumulator still
// holds the number wherever the dispatch continues.
func (a *assembler) syscall(nr uint32, all []rule, idx []int, defRet uint32) {
	var conditional []rule
	var final *rule
	for _, i := range idx {
		if len(all[i].conds) > 0 {
			conditional = append(conditional, all[i])
		} else if final == nil {
			final = &all[i]
		}
	}
	if len(conditional) == 0 {
		a.jeq(nr, next, skip1)
		a.ret(final.ret)
		return
	}
	end := a.newLabel()
	a.jeq(nr, skip1, next)
	a.ja(end)
	for _, r := range conditional {
		fail := a.newLabel()
		for _, c := range r.conds {
			opEmitters[c.Op](a, c, fail)
		}
		a.ret(r.ret)
		a.mark(fail)
	}
	if final != nil {
		a.ret(final.ret)
	} else {
		a.ret(defRet)
	}
	a.mark(end)
}
