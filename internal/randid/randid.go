// Package randid makes the IDs pods and containers are named by: 32
// random bytes from the kernel (getrandom), in hex, as containerd and
// CRI-O make theirs, so that an ID is unique without any registry and a
// short prefix of it (internal/idprefix) is almost always unique too. It
// also says which IDs are safe to name files and CNI attachments by.
package randid

import (
	"crypto/rand"
	"encoding/hex"
)

// New returns a new 64-hex-digit ID.
func New() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}

// MaxLen is the longest ID Valid accepts.
const MaxLen = 128

// Valid reports whether id may name a pod's or a container's files and
// its CNI attachment: 1 to MaxLen characters, an ASCII letter or digit
// first, then letters, digits, '_', '.' or '-' (what CNI accepts as a
// container ID). It is a loop, not a regular expression: one of this
// length bound compiles to a program of some 1,700 allocations, which
// every process of every container paid at start-up.
func Valid(id string) bool {
	if len(id) == 0 || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}
