package randid

import (
	"encoding/hex"
	"regexp"
	"strings"
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

func TestValid(t *testing.T) {
	for id, want := range map[string]bool{
		New(): true, "a": true, "Z9": true, "a_b.c-d": true, strings.Repeat("a", MaxLen): true,
		"": false, strings.Repeat("a", MaxLen+1): false, "-a": false, ".a": false, "_a": false,
		"a/b": false, "..": false, "a b": false, "a\x00": false, "é": false, "a\n": false,
	} {
		if got := Valid(id); got != want {
			t.Errorf("Valid(%q) = %v, want %v", id, got, want)
		}
	}
}

// FuzzValid holds Valid to the regular expression it stands for.
func FuzzValid(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	for _, s := range []string{"a", "a-b", "-", "a/..", strings.Repeat("x", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := Valid(id), re.MatchString(id); got != want {
			t.Errorf("Valid(%q) = %v, the expression says %v", id, got, want)
		}
	})
}
