package idprefix

import (
	"errors"
	"testing"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

func TestFind(t *testing.T) {
	ids := []string{"abc123", "abd456", "ffff"}
	self := func(s string) string { return s }
	if got, err := Find(ids, self, "abc", "container"); err != nil || got != "abc123" {
		t.Errorf("unique prefix: %q %v", got, err)
	}
	if got, err := Find(ids, self, "ffff", "container"); err != nil || got != "ffff" {
		t.Errorf("full id: %q %v", got, err)
	}
	for prefix, want := range map[string]error{"ab": errdefs.ErrInvalidArgument, "": errdefs.ErrInvalidArgument, "zz": errdefs.ErrNotFound} {
		if _, err := Find(ids, self, prefix, "container"); !errors.Is(err, want) {
			t.Errorf("Find(%q): %v, want %v", prefix, err, want)
		}
	}
}
