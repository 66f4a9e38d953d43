package config

import (
	"bytes"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// ImageConfig is the [image] table: where registries are configured. It is
// a table of its own so that it grows apart from the daemon's top-level
// keys.
type ImageConfig struct {
	RegistryConfigPath string `toml:"registry_config_path"`
}

func defaultImageConfig() ImageConfig {
	return ImageConfig{RegistryConfigPath: "/etc/cri-mini/certs.d"}
}

// imageFlags are the command-line forms of the [image] keys.
type imageFlags struct {
	registryConfigPath string
}

func registerImageFlags(fs *flag.FlagSet, d ImageConfig) *imageFlags {
	f := &imageFlags{}
	fs.StringVar(&f.registryConfigPath, "registry-config-path", d.RegistryConfigPath,
		"colon-separated directories holding a directory per registry host with a hosts.toml (containerd's config_path)")
	return f
}

// apply copies the flag called name, if it is an image flag, into c.
func (f *imageFlags) apply(name string, c *ImageConfig) error {
	switch name {
	case "registry-config-path":
		c.RegistryConfigPath = f.registryConfigPath
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
	} {
		v, err := tomlValue(kv.v)
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "\n# %s\n%s = %s\n", kv.doc, kv.key, v)
	}
	return nil
}
