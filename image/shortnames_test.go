package image

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

func TestShortNameCandidates(t *testing.T) {
	sn := ShortNames{Search: []string{"quay.io", "docker.io"}, Aliases: map[string]string{"pause": "registry.k8s.io/pause"}}
	for in, want := range map[string]string{
		"busybox":                      "[quay.io/busybox:latest docker.io/library/busybox:latest]",
		"team/app:1":                   "[quay.io/team/app:1 docker.io/team/app:1]",
		"app@sha256:" + zeros64:        "[quay.io/app@sha256:" + zeros64 + " docker.io/library/app@sha256:" + zeros64 + "]",
		"pause:3.10":                   "[registry.k8s.io/pause:3.10]",
		"pause":                        "[registry.k8s.io/pause:latest]",
		"localhost/app":                "[localhost/app:latest]",
		"registry.example.com/app:2":   "[registry.example.com/app:2]",
		"reg:5000/app":                 "[reg:5000/app:latest]",
		"docker.io/library/busybox":    "[docker.io/library/busybox:latest]",
		"UPPER/app":                    "[UPPER/app:latest]", // an upper-case first component is a host, as in Docker's grammar
		"team/app:1@sha256:" + zeros64: "[quay.io/team/app@sha256:" + zeros64 + " docker.io/team/app@sha256:" + zeros64 + "]",
	} {
		cands, err := sn.Candidates(in)
		if in == "UPPER/app" {
			if err == nil {
				t.Errorf("%s: %v, want refused (not a valid host or repository)", in, cands)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		got := make([]string, len(cands))
		for i, c := range cands {
			got[i] = c.String()
		}
		if fmt.Sprint(got) != want {
			t.Errorf("%s: %v, want %s", in, got, want)
		}
	}
	_, err := ShortNames{}.Candidates("busybox:1.36")
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "short_name_search") || !strings.Contains(err.Error(), "registry.example.com/busybox:1.36") {
		t.Errorf("short name with no search registry: %v, want InvalidArgument saying how to qualify it", err)
	}
	if _, err := (ShortNames{}).Candidates("quay.io/busybox"); err != nil {
		t.Errorf("a full name with no search registry: %v", err)
	}
}

// TestShortNamesThroughPull: a short name is pulled from the first search
// registry that has it and named there, found again by the same short name,
// refused with InvalidArgument when nothing is configured, and an alias
// overrides the search.
func TestShortNamesThroughPull(t *testing.T) {
	roottest.Require(t)
	empty, has, aliased := newTestRegistry(t), newTestRegistry(t), newTestRegistry(t)
	img := imageOf(t, layer(t, file("s", "short")))
	has.push(t, "team/app:1", img)
	aliased.push(t, "elsewhere/app:1", imageOf(t, layer(t, file("s", "alias"))))
	insecure := []string{empty.host, has.host, aliased.host}

	s := openStore(t, nil, Options{InsecureRegistries: insecure, ShortNames: ShortNames{Search: []string{empty.host, has.host}}})
	got := pull(t, s, "team/app:1")
	if got.RepoTags[0] != has.host+"/team/app:1" {
		t.Errorf("tags %v, want the second search registry's name", got.RepoTags)
	}
	if again, err := s.Get("team/app:1"); err != nil || again.ID != got.ID {
		t.Errorf("Get by the short name: %v %v", again, err)
	}
	if _, err := tryPull(s, "team/none:1"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), empty.host) || !strings.Contains(err.Error(), has.host) {
		t.Errorf("short name no search registry has: %v, want NotFound naming both", err)
	}

	none := openStore(t, nil, Options{InsecureRegistries: insecure})
	if _, err := tryPull(none, "team/app:1"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("short name without search registries: %v, want InvalidArgument", err)
	}
	if _, err := none.Get("team/app:1"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Get of a short name without search registries: %v, want InvalidArgument", err)
	}
	if len(empty.log()) == 0 {
		t.Error("the first search registry was not asked")
	}

	alias := openStore(t, nil, Options{InsecureRegistries: insecure,
		ShortNames: ShortNames{Search: []string{has.host}, Aliases: map[string]string{"team/app": aliased.host + "/elsewhere/app"}}})
	if got := pull(t, alias, "team/app:1"); got.RepoTags[0] != aliased.host+"/elsewhere/app:1" {
		t.Errorf("alias: tags %v", got.RepoTags)
	}
}
