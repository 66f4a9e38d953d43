package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// ImageConfig is the [image] table: where registries are configured, what
// short names mean, which images are pinned, what becomes of an image's
// VOLUMEs and which signatures images need. It is a table of its own so that it grows apart
// from the daemon's top-level keys.
type ImageConfig struct {
	RegistryConfigPath string            `toml:"registry_config_path"`
	ShortNameSearch    []string          `toml:"short_name_search"`
	ShortNameAliases   map[string]string `toml:"short_name_aliases"`
	PinnedImages       []string          `toml:"pinned_images"`
	ImageVolumes       string            `toml:"image_volumes"`
	SignaturePolicy    string            `toml:"signature_policy"`
}

// Treatments of an image's VOLUMEs.
const (
	ImageVolumesMkdir  = "mkdir"
	ImageVolumesIgnore = "ignore"
)

// defaultImageConfig keeps docker.io as the one search registry: kubelet
// users write "nginx" and expect Docker Hub, as containerd and Docker
// resolve it; an operator who wants short names refused sets the list empty.
func defaultImageConfig() ImageConfig {
	return ImageConfig{
		RegistryConfigPath: "/etc/cri-mini/certs.d",
		ShortNameSearch:    []string{"docker.io"},
		ShortNameAliases:   map[string]string{},
		PinnedImages:       []string{},
		ImageVolumes:       ImageVolumesMkdir,
	}
}

// ShortNames is the image package's form of the short-name keys.
func (c ImageConfig) ShortNames() image.ShortNames {
	return image.ShortNames{Search: c.ShortNameSearch, Aliases: c.ShortNameAliases}
}

func (c *ImageConfig) fillNil() {
	if c.ShortNameAliases == nil {
		c.ShortNameAliases = map[string]string{}
	}
	if c.ShortNameSearch == nil {
		c.ShortNameSearch = []string{}
	}
	if c.PinnedImages == nil {
		c.PinnedImages = []string{}
	}
}

// imageFlags are the command-line forms of the [image] keys.
type imageFlags struct {
	registryConfigPath string
	shortNameSearch    listFlag
	shortNameAliases   listFlag
	pinnedImages       listFlag
	imageVolumes       string
	signaturePolicy    string
}

func registerImageFlags(fs *flag.FlagSet, d ImageConfig) *imageFlags {
	f := &imageFlags{}
	fs.StringVar(&f.registryConfigPath, "registry-config-path", d.RegistryConfigPath,
		"colon-separated directories holding a directory per registry host with a hosts.toml (containerd's config_path)")
	fs.Var(&f.shortNameSearch, "short-name-search", "registry searched for names without one, in order (repeatable; replaces the file's list; \"\" alone: refuse short names)")
	fs.Var(&f.shortNameAliases, "short-name-alias", "NAME=REGISTRY/REPOSITORY: what a short name means (repeatable)")
	fs.Var(&f.pinnedImages, "pinned-image", "image (name or sha256: ID) that RemoveImage and kubelet's image garbage collection leave alone (repeatable)")
	fs.StringVar(&f.signaturePolicy, "signature-policy", d.SignaturePolicy, "containers-policy.json file images must satisfy at pull and at container creation (empty: none)")
	fs.StringVar(&f.imageVolumes, "image-volumes", d.ImageVolumes, "an image's VOLUMEs: mkdir (directories in the container's writable layer) or ignore")
	return f
}

// apply copies the flag called name, if it is an image flag, into c.
func (f *imageFlags) apply(name string, c *ImageConfig) error {
	switch name {
	case "registry-config-path":
		c.RegistryConfigPath = f.registryConfigPath
	case "short-name-search":
		c.ShortNameSearch = slices.DeleteFunc(slices.Clone(f.shortNameSearch), func(s string) bool { return s == "" })
	case "short-name-alias":
		var errs []error
		for _, a := range f.shortNameAliases {
			short, full, ok := strings.Cut(a, "=")
			if !ok {
				errs = append(errs, fmt.Errorf("--short-name-alias %q: want NAME=REGISTRY/REPOSITORY: %w", a, errdefs.ErrInvalidArgument))
				continue
			}
			if c.ShortNameAliases == nil {
				c.ShortNameAliases = map[string]string{}
			}
			c.ShortNameAliases[short] = full
		}
		return errors.Join(errs...)
	case "signature-policy":
		c.SignaturePolicy = f.signaturePolicy
	case "image-volumes":
		c.ImageVolumes = f.imageVolumes
	case "pinned-image":
		for _, p := range f.pinnedImages {
			if !slices.Contains(c.PinnedImages, p) {
				c.PinnedImages = append(c.PinnedImages, p)
			}
		}
	}
	return nil
}

// validate checks the [image] keys, naming the one at fault.
func (c ImageConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("image.%s: %s: %w", key, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument))
	}
	for _, dir := range filepath.SplitList(c.RegistryConfigPath) {
		if !filepath.IsAbs(dir) {
			bad("registry_config_path", "%q is not an absolute path", dir)
		}
	}
	for _, r := range c.ShortNameSearch {
		if r == "" || strings.ContainsAny(r, "/@") || image.IsShortName(r+"/x") {
			bad("short_name_search", "%q is not a registry HOST[:PORT] (a host has a dot or a port, or is localhost)", r)
		}
	}
	for short, full := range c.ShortNameAliases {
		if !image.IsShortName(short) || strings.ContainsAny(short, ":@") {
			bad("short_name_aliases", "%q is not a short name without tag or digest", short)
		}
		if image.IsShortName(full) || strings.Contains(full, "@") || strings.LastIndex(full, ":") > strings.LastIndex(full, "/") {
			bad("short_name_aliases", "%q = %q: want REGISTRY/REPOSITORY without tag or digest", short, full)
		} else if _, err := image.ParseReference(full); err != nil {
			bad("short_name_aliases", "%q = %q: %v", short, full, err)
		}
	}
	for _, p := range c.PinnedImages {
		if id, ok := strings.CutPrefix(p, "sha256:"); ok {
			if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
				bad("pinned_images", "%q is not a full image ID (sha256: and 64 hex digits)", p)
			}
		} else if _, err := c.ShortNames().Candidates(p); err != nil {
			bad("pinned_images", "%q: %v", p, err)
		}
	}
	if c.SignaturePolicy != "" && !filepath.IsAbs(c.SignaturePolicy) {
		bad("signature_policy", "%q is not an absolute path", c.SignaturePolicy)
	}
	if c.ImageVolumes != ImageVolumesMkdir && c.ImageVolumes != ImageVolumesIgnore {
		bad("image_volumes", "%q (want %s or %s)", c.ImageVolumes, ImageVolumesMkdir, ImageVolumesIgnore)
	}
	return errs
}

// render writes the [image] table, a comment above each key.
func (c ImageConfig) render(b *bytes.Buffer) error {
	b.WriteString("\n# Images and registries.\n[image]\n")
	for _, kv := range []struct {
		doc string
		key string
		v   any
	}{
		{"Directories (colon-separated) holding one directory per registry host\n# (\"docker.io\", \"registry.example.com:5000\", \"_default\" for the others), each\n# with a containerd-style hosts.toml: mirrors, CAs, client certificates,\n# headers. Read again at the next pull after a change.", "registry_config_path", c.RegistryConfigPath},
		{"Registries searched, in order, for image names without one (\"nginx\"); empty\n# refuses such names with InvalidArgument.", "short_name_search", c.ShortNameSearch},
		{"Images (names or sha256: IDs) reported pinned and never removed:\n# RemoveImage refuses them (FailedPrecondition), kubelet's image garbage\n# collection keeps them.", "pinned_images", c.PinnedImages},
		{"An image's VOLUMEs: \"mkdir\" makes each a directory in the container's\n# writable layer (containerd's default, keeping what the image has there);\n# \"ignore\" leaves them to the pod's volumes.", "image_volumes", c.ImageVolumes},
		{"A containers-policy.json (as CRI-O's /etc/containers/policy.json: reject,\n# insecureAcceptAnything, sigstoreSigned by public key, per registry or\n# repository) every image must satisfy at pull and at each container's\n# creation; empty: none.", "signature_policy", c.SignaturePolicy},
	} {
		v, err := tomlValue(kv.v)
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "\n# %s\n%s = %s\n", kv.doc, kv.key, v)
	}
	b.WriteString("\n# What a short name means: NAME = \"REGISTRY/REPOSITORY\" (before any search).\n# Example: \"busybox\" = \"registry.example.com/library/busybox\"\n[image.short_name_aliases]\n")
	return writeStringTable(b, c.ShortNameAliases)
}
