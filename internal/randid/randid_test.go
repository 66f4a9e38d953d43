package randid

import (
	"encoding/hex"
	"testing"
)

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := New()
		if b, err := hex.DecodeString(id); err != nil || len(b) != 32 {
			t.Fatalf("ID %q: %v, want 64 hex digits", id, err)
		}
		if seen[id] {
			t.Fatalf("ID %s came twice", id)
		}
		seen[id] = true
	}
}
