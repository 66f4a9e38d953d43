package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// dockerHub is the registry a short name means; ggcr spells it
// index.docker.io, kubelet and crictl spell it docker.io.
const (
	dockerHub      = "docker.io"
	dockerHubIndex = "index.docker.io"
)

// Reference is a parsed image name in the canonical form kubelet and crictl
// use: busybox -> docker.io/library/busybox:latest.
type Reference struct {
	ref name.Reference
}

// ParseReference normalises an image name. A name with both a tag and a
// digest keeps only the digest, as a pull by digest ignores the tag.
func ParseReference(s string) (Reference, error) {
	if s == "" {
		return Reference{}, fmt.Errorf("image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	if at := strings.Index(s, "@"); at >= 0 {
		// "name:tag@digest": drop the tag, but not a registry port ("host:5000/x@...").
		head := s[:at]
		if colon := strings.LastIndex(head, ":"); colon > strings.LastIndex(head, "/") {
			s = head[:colon] + s[at:]
		}
	}
	r, err := name.ParseReference(s)
	if err != nil {
		return Reference{}, fmt.Errorf("image name %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return Reference{ref: r}, nil
}

// Registry is the registry host as written in the name (docker.io for Docker Hub).
func (r Reference) Registry() string {
	reg := r.ref.Context().RegistryStr()
	if reg == dockerHubIndex {
		return dockerHub
	}
	return reg
}

// Repository is the repository path inside the registry ("library/busybox").
func (r Reference) Repository() string { return r.ref.Context().RepositoryStr() }

// Name is registry/repository without tag or digest.
func (r Reference) Name() string { return r.Registry() + "/" + r.Repository() }

// Digest is the digest the name pins, or "".
func (r Reference) Digest() string {
	if d, ok := r.ref.(name.Digest); ok {
		return d.DigestStr()
	}
	return ""
}

// Tag is the tag the name carries, or "" for a digest reference.
func (r Reference) Tag() string {
	if t, ok := r.ref.(name.Tag); ok {
		return t.TagStr()
	}
	return ""
}

// String is the canonical name: registry/repository:tag or @digest.
func (r Reference) String() string {
	if d := r.Digest(); d != "" {
		return r.Name() + "@" + d
	}
	return r.Name() + ":" + r.Tag()
}

// at is the same repository and tag or digest on an endpoint's host.
func (r Reference) at(ep *endpoint) (name.Reference, error) {
	var opts []name.Option
	if ep.plainHTTP {
		opts = append(opts, name.Insecure)
	}
	repo := ep.host + "/" + r.Repository()
	if d := r.Digest(); d != "" {
		return name.NewDigest(repo+"@"+d, opts...)
	}
	return name.NewTag(repo+":"+r.Tag(), opts...)
}

// withDigest is the same repository pinned to digest.
func (r Reference) withDigest(digest string) (Reference, error) {
	return ParseReference(r.Name() + "@" + digest)
}

// PlatformAnnotation, in a CRI ImageSpec's annotations, names the platform
// ("os/arch[/variant]", as "linux/arm64/v8") to pick from a manifest list
// instead of the node's. kubelet copies a pod's annotations there.
const PlatformAnnotation = "io.cri-mini.image.platform"

var platformPart = regexp.MustCompile(`^[a-z0-9_]+$`)

// PlatformFromAnnotations is the platform an ImageSpec's annotations ask
// for, nil when they ask for none.
func PlatformFromAnnotations(annotations map[string]string) (*v1.Platform, error) {
	s, ok := annotations[PlatformAnnotation]
	if !ok {
		return nil, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || !platformPart.MatchString(p.OS) || !platformPart.MatchString(p.Architecture) ||
		(p.Variant != "" && !platformPart.MatchString(p.Variant)) || p.OSVersion != "" {
		return nil, fmt.Errorf("annotation %s=%q: want os/arch[/variant], as linux/arm64/v8: %w", PlatformAnnotation, s, errdefs.ErrInvalidArgument)
	}
	return p, nil
}
