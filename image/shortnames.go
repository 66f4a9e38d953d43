package image

import (
	"fmt"
	"strings"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// ShortNames says what an image name without a registry ("busybox",
// "library/nginx:1.27") means, as containers-registries.conf's
// unqualified-search-registries and aliases do.
type ShortNames struct {
	// Search are the registries tried in order, each with the name below
	// it (on docker.io a one-component name goes below library/). Empty:
	// short names are refused.
	Search []string
	// Aliases map a short name (without tag or digest) to the repository it
	// means ("busybox" -> "registry.example.com/mirror/busybox"); an alias
	// is the only candidate of its name.
	Aliases map[string]string
}

// IsShortName tells whether an image name lacks a registry: its first
// component is a host only if it has a "." or ":" (a port), or is
// "localhost", as Docker's reference grammar decides.
func IsShortName(s string) bool {
	first, _, found := strings.Cut(s, "/")
	if !found {
		return true
	}
	return !strings.ContainsAny(first, ".:") && first != "localhost" && strings.ToLower(first) == first
}

// Candidates are the full names s may mean, in the order they are tried:
// s itself when it has a registry, else its alias or one name per search
// registry. A short name with neither is InvalidArgument, saying how to
// qualify it or what to configure.
func (sn ShortNames) Candidates(s string) ([]Reference, error) {
	if !IsShortName(s) {
		r, err := ParseReference(s)
		if err != nil {
			return nil, err
		}
		return []Reference{r}, nil
	}
	repo, suffix := splitTagOrDigest(s)
	if alias, ok := sn.Aliases[repo]; ok {
		r, err := ParseReference(alias + suffix)
		if err != nil {
			return nil, fmt.Errorf("image %q: short-name alias %q: %w", s, alias, err)
		}
		return []Reference{r}, nil
	}
	if len(sn.Search) == 0 {
		return nil, fmt.Errorf("image %q names no registry, and no short-name search registries are configured (image.short_name_search): write it in full (registry.example.com/%s), or configure a search registry or an alias for it: %w",
			s, s, errdefs.ErrInvalidArgument)
	}
	cands := make([]Reference, 0, len(sn.Search))
	for _, reg := range sn.Search {
		full := reg + "/" + s
		if reg == dockerHub && !strings.Contains(repo, "/") {
			full = reg + "/library/" + s
		}
		r, err := ParseReference(full)
		if err != nil {
			return nil, err
		}
		cands = append(cands, r)
	}
	return cands, nil
}

// splitTagOrDigest splits "name:tag" or "name@digest" into the name and
// the rest (":tag", "@digest" or "").
func splitTagOrDigest(s string) (string, string) {
	if at := strings.Index(s, "@"); at >= 0 {
		s, digest := s[:at], s[at:]
		name, _ := splitTagOrDigest(s)
		return name, digest
	}
	if colon := strings.LastIndex(s, ":"); colon > strings.LastIndex(s, "/") {
		return s[:colon], s[colon:]
	}
	return s, ""
}
