// Package config holds cri-mini's daemon settings: the built-in defaults, the
// TOML file given with --config and the command-line flags, applied in that
// order, and the commented TOML rendering that `cri-mini config` prints.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Config is the effective daemon configuration. Every field is a key of the
// TOML file and a command-line flag (flag name = key with '-' for '_',
// repeatable flags for the list and table keys).
type Config struct {
	Listen             string            `toml:"listen"`
	Root               string            `toml:"root"`
	RunRoot            string            `toml:"runroot"`
	CNIConfigDir       string            `toml:"cni_config_dir"`
	CNIPluginDir       string            `toml:"cni_plugin_dir"`
	CgroupDriver       string            `toml:"cgroup_driver"`
	StreamAddress      string            `toml:"stream_address"`
	MetricsAddress     string            `toml:"metrics_address"`
	Verbosity          int               `toml:"verbosity"`
	InsecureRegistries []string          `toml:"insecure_registries"`
	RegistryMirrors    map[string]string `toml:"registry_mirrors"`
}

// Cgroup drivers.
const (
	CgroupfsDriver = "cgroupfs"
	SystemdDriver  = "systemd"
)

// Default returns the built-in configuration: a node needs no file.
func Default() Config {
	return Config{
		Listen:          "unix:///run/cri-mini/cri-mini.sock",
		Root:            "/var/lib/cri-mini",
		RunRoot:         "/run/cri-mini",
		CNIConfigDir:    "/etc/cni/net.d",
		CNIPluginDir:    "/opt/cni/bin:/usr/lib/cni",
		CgroupDriver:    CgroupfsDriver,
		StreamAddress:   "127.0.0.1:0",
		RegistryMirrors: map[string]string{},
	}
}

// LoadFile decodes the TOML file at path over c. A key cri-mini does not know
// is an error that names it, so that a typo is not silently ignored.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return c.load(path, data)
}

func (c *Config) load(name string, data []byte) error {
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return fmt.Errorf("config file %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return fmt.Errorf("config file %s: unknown key %s: %w", name, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
	}
	if c.RegistryMirrors == nil {
		c.RegistryMirrors = map[string]string{}
	}
	return nil
}

// Flags collects the command-line values; Apply copies the ones the user set.
type Flags struct {
	fs                 *flag.FlagSet
	ConfigFile         string
	listen, root       string
	runRoot            string
	cniConfigDir       string
	cniPluginDir       string
	cgroupDriver       string
	streamAddress      string
	metricsAddress     string
	verbosity          int
	insecureRegistries listFlag
	registryMirrors    listFlag
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// RegisterFlags defines the daemon flags on fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	d := Default()
	f := &Flags{fs: fs}
	fs.StringVar(&f.ConfigFile, "config", "", "TOML configuration file (keys as printed by `cri-mini config`)")
	fs.StringVar(&f.listen, "listen", d.Listen, "CRI endpoint: unix:///path/to/socket")
	fs.StringVar(&f.root, "root", d.Root, "persistent state: images, layers, container upper dirs")
	fs.StringVar(&f.runRoot, "runroot", d.RunRoot, "runtime state: pods, containers, pinned namespaces, sockets")
	fs.StringVar(&f.cniConfigDir, "cni-config-dir", d.CNIConfigDir, "CNI network configurations (the first one is used)")
	fs.StringVar(&f.cniPluginDir, "cni-plugin-dir", d.CNIPluginDir, "colon-separated CNI plugin directories")
	fs.StringVar(&f.cgroupDriver, "cgroup-driver", d.CgroupDriver, "cgroupfs or systemd")
	fs.StringVar(&f.streamAddress, "stream-address", d.StreamAddress, "host:port of the exec/attach/port-forward server")
	fs.StringVar(&f.metricsAddress, "metrics-address", d.MetricsAddress, "host:port of the Prometheus metrics endpoint (empty: off)")
	fs.IntVar(&f.verbosity, "v", d.Verbosity, "log verbosity (klog -v)")
	fs.Var(&f.insecureRegistries, "insecure-registry", "registry HOST[:PORT] reached over plain HTTP or unverified TLS (repeatable)")
	fs.Var(&f.registryMirrors, "registry-mirror", "HOST=URL: pull images of registry HOST from URL (repeatable)")
	return f
}

// Apply overrides c with the flags given on the command line. Repeatable
// flags add to the file's lists; a mirror flag replaces the file's entry for
// the same host.
func (f *Flags) Apply(c *Config) error {
	var err error
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "listen":
			c.Listen = f.listen
		case "root":
			c.Root = f.root
		case "runroot":
			c.RunRoot = f.runRoot
		case "cni-config-dir":
			c.CNIConfigDir = f.cniConfigDir
		case "cni-plugin-dir":
			c.CNIPluginDir = f.cniPluginDir
		case "cgroup-driver":
			c.CgroupDriver = f.cgroupDriver
		case "stream-address":
			c.StreamAddress = f.streamAddress
		case "metrics-address":
			c.MetricsAddress = f.metricsAddress
		case "v":
			c.Verbosity = f.verbosity
		case "insecure-registry":
			for _, r := range f.insecureRegistries {
				if !slices.Contains(c.InsecureRegistries, r) {
					c.InsecureRegistries = append(c.InsecureRegistries, r)
				}
			}
		case "registry-mirror":
			for _, m := range f.registryMirrors {
				host, u, ok := strings.Cut(m, "=")
				if !ok {
					err = errors.Join(err, fmt.Errorf("--registry-mirror %q: want HOST=URL: %w", m, errdefs.ErrInvalidArgument))
					continue
				}
				if c.RegistryMirrors == nil {
					c.RegistryMirrors = map[string]string{}
				}
				c.RegistryMirrors[host] = u
			}
		}
	})
	return err
}

// Load returns the effective configuration: defaults, then the --config
// file if one was given, then the flags set on the command line; validated.
func (f *Flags) Load() (Config, error) {
	c := Default()
	if f.ConfigFile != "" {
		if err := c.LoadFile(f.ConfigFile); err != nil {
			return Config{}, err
		}
	}
	if err := f.Apply(&c); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// SocketPath is the file of the unix socket named by Listen.
func (c Config) SocketPath() (string, error) {
	p, ok := strings.CutPrefix(c.Listen, "unix://")
	if !ok && !strings.HasPrefix(c.Listen, "/") {
		return "", fmt.Errorf("listen %q: want unix:///absolute/path: %w", c.Listen, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("listen %q: socket path must be absolute: %w", c.Listen, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// Validate checks every value, naming the key at fault.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %w", key, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument))
	}
	if _, err := c.SocketPath(); err != nil {
		errs = append(errs, err)
	}
	for key, dir := range map[string]string{"root": c.Root, "runroot": c.RunRoot, "cni_config_dir": c.CNIConfigDir} {
		if !filepath.IsAbs(dir) {
			bad(key, "%q is not an absolute path", dir)
		}
	}
	if c.Root != "" && filepath.Clean(c.Root) == filepath.Clean(c.RunRoot) {
		bad("runroot", "must differ from root (%s)", c.Root)
	}
	if c.CNIPluginDir == "" {
		bad("cni_plugin_dir", "empty")
	}
	if c.CgroupDriver != CgroupfsDriver && c.CgroupDriver != SystemdDriver {
		bad("cgroup_driver", "%q (want %s or %s)", c.CgroupDriver, CgroupfsDriver, SystemdDriver)
	}
	if _, _, err := net.SplitHostPort(c.StreamAddress); err != nil {
		bad("stream_address", "%q: %v", c.StreamAddress, err)
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			bad("metrics_address", "%q: %v", c.MetricsAddress, err)
		}
	}
	if c.Verbosity < 0 {
		bad("verbosity", "%d is negative", c.Verbosity)
	}
	for _, r := range c.InsecureRegistries {
		if r == "" || strings.Contains(r, "/") {
			bad("insecure_registries", "%q is not HOST[:PORT]", r)
		}
	}
	for host, mirror := range c.RegistryMirrors {
		u, err := url.Parse(mirror)
		if host == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("registry_mirrors", "%q = %q: want HOST = \"http(s)://...\"", host, mirror)
		}
	}
	return errors.Join(errs...)
}

// keyDocs is the comment printed above each key by Render, in file order.
var keyDocs = []struct{ key, doc string }{
	{"listen", "CRI endpoint kubelet and crictl connect to; the socket is created mode 0660."},
	{"root", "Persistent state: images, unpacked layers, container upper directories."},
	{"runroot", "Runtime state: pods, containers, pinned namespaces, sockets. One daemon per runroot."},
	{"cni_config_dir", "CNI network configurations; the first file (by name) is used, a built-in\n# bridge network (bridge + host-local + portmap + loopback) while it is empty."},
	{"cni_plugin_dir", "Colon-separated directories searched for CNI plugin binaries."},
	{"cgroup_driver", "Who makes the cgroups: \"cgroupfs\" (cri-mini, named by paths) or \"systemd\" (a\n# transient scope per container in its pod's slice; needs systemd as init and\n# cgroup v2). Keep it equal to kubelet's cgroupDriver."},
	{"stream_address", "host:port of the exec/attach/port-forward server; port 0 picks a free one."},
	{"metrics_address", "host:port of the Prometheus metrics endpoint; empty turns it off."},
	{"verbosity", "Log verbosity (klog -v): 2 logs every CRI call with its duration and code."},
	{"insecure_registries", "Registries (HOST[:PORT]) reached over plain HTTP or with unverified TLS."},
	{"registry_mirrors", "Mirrors by registry host: HOST = \"URL\". Pulls from HOST go to URL first."},
}

// Render prints c as a complete TOML file with a comment above every key; it
// parses back to c.
func (c Config) Render() ([]byte, error) {
	values := map[string]any{
		"listen": c.Listen, "root": c.Root, "runroot": c.RunRoot,
		"cni_config_dir": c.CNIConfigDir, "cni_plugin_dir": c.CNIPluginDir,
		"cgroup_driver": c.CgroupDriver, "stream_address": c.StreamAddress,
		"metrics_address": c.MetricsAddress, "verbosity": c.Verbosity,
		"insecure_registries": nonNil(c.InsecureRegistries),
	}
	var b bytes.Buffer
	b.WriteString("# cri-mini configuration (cri-mini --config FILE). Flags override these keys.\n")
	for _, kd := range keyDocs {
		fmt.Fprintf(&b, "\n# %s\n", kd.doc)
		if kd.key == "registry_mirrors" {
			b.WriteString("# Example: \"registry.example.com\" = \"http://mirror.local:5000\"\n[registry_mirrors]\n")
			hosts := make([]string, 0, len(c.RegistryMirrors))
			for h := range c.RegistryMirrors {
				hosts = append(hosts, h)
			}
			slices.Sort(hosts)
			for _, h := range hosts {
				k, err := tomlValue(h)
				if err != nil {
					return nil, err
				}
				v, err := tomlValue(c.RegistryMirrors[h])
				if err != nil {
					return nil, err
				}
				fmt.Fprintf(&b, "%s = %s\n", k, v)
			}
			continue
		}
		v, err := tomlValue(values[kd.key])
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s = %s\n", kd.key, v)
	}
	return b.Bytes(), nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tomlValue renders one value in TOML syntax (quoting and escaping by the
// toml encoder, not by hand).
func tomlValue(v any) (string, error) {
	out, err := toml.Marshal(map[string]any{"v": v})
	if err != nil {
		return "", fmt.Errorf("render config value %v: %w", v, err)
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "v = ")
	if !ok {
		return "", fmt.Errorf("render config value %v: unexpected encoding %q", v, out)
	}
	return s, nil
}
