// Package randid makes the IDs pods and containers are named by: 32
// random bytes from the kernel (getrandom), in hex, as containerd and
// CRI-O make theirs, so that an ID is unique without any registry and a
// short prefix of it (internal/idprefix) is almost always unique too.
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
