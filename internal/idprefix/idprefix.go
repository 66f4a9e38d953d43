// Package idprefix resolves the shortened IDs crictl and people type: a
// full ID or any prefix of exactly one.
package idprefix

import (
	"fmt"
	"strings"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Find returns the one item whose ID (as id gives it) starts with prefix.
// kind names the items in errors ("container", "pod sandbox"): none is
// ErrNotFound, several ErrInvalidArgument.
func Find[T any](items []T, id func(T) string, prefix, kind string) (T, error) {
	var found T
	matches := 0
	for _, it := range items {
		if strings.HasPrefix(id(it), prefix) {
			found = it
			matches++
		}
	}
	switch {
	case prefix == "":
		var zero T
		return zero, fmt.Errorf("%s id is empty: %w", kind, errdefs.ErrInvalidArgument)
	case matches == 0:
		return found, fmt.Errorf("%s %q: %w", kind, prefix, errdefs.ErrNotFound)
	case matches > 1:
		var zero T
		return zero, fmt.Errorf("%s id prefix %q is ambiguous: %w", kind, prefix, errdefs.ErrInvalidArgument)
	}
	return found, nil
}
