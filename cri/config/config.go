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
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Config is the effective daemon configuration. Every field is a key of the
// TOML file and a command-line flag (flag name = key with '-' for '_',
// repeatable flags for the list and table keys).
type Config struct {
	Listen             string   `toml:"listen"`
	Root               string   `toml:"root"`
	RunRoot            string   `toml:"runroot"`
	CNIConfigDir       string   `toml:"cni_config_dir"`
	CNIPluginDir       string   `toml:"cni_plugin_dir"`
	CgroupDriver       string   `toml:"cgroup_driver"`
	StreamAddress      string   `toml:"stream_address"`
	MetricsAddress     string   `toml:"metrics_address"`
	Verbosity          int      `toml:"verbosity"`
	InsecureRegistries []string `toml:"insecure_registries"`
	// EnableUnprivilegedPorts and EnableUnprivilegedICMP give every pod
	// with a network of its own net.ipv4.ip_unprivileged_port_start=0 and
	// net.ipv4.ping_group_range="0 2147483647" (unless it sets them), as
	// containerd does: a non-root server may bind :80, anyone may ping.
	EnableUnprivilegedPorts bool `toml:"enable_unprivileged_ports"`
	EnableUnprivilegedICMP  bool `toml:"enable_unprivileged_icmp"`
	// DeviceOwnershipFromSecurityContext makes a container's devices
	// (ContainerConfig.devices) owned by its run_as_user and run_as_group
	// (0 when unset) instead of the host node's owner, as containerd's key
	// of the same name: a non-root container can use its GPU.
	DeviceOwnershipFromSecurityContext bool `toml:"device_ownership_from_security_context"`
	// UsernsAllowHostRoot admits a pod user namespace (hostUsers: false)
	// whose range maps the host's uid or gid 0.
	UsernsAllowHostRoot bool `toml:"userns_allow_host_root"`
	// EnableCDI resolves the CDI devices a container asks for (its
	// CDI_devices and cdi.k8s.io/ annotations) in the CDI specs of
	// CDISpecDirs (later directories win over earlier ones).
	EnableCDI       bool              `toml:"enable_cdi"`
	CDISpecDirs     []string          `toml:"cdi_spec_dirs"`
	RegistryMirrors map[string]string `toml:"registry_mirrors"`
	MaxLayerSize    int64             `toml:"max_layer_size"`
	Image           ImageConfig       `toml:"image"`
	// Runtimes are the runtime handlers besides the default one, "", by
	// name (the handler a RuntimeClass names): [runtimes.NAME] tables. Each
	// runs pods as the default handler does; per-handler settings can come.
	Runtimes map[string]RuntimeHandler `toml:"runtimes"`
}

// RuntimeHandler is a [runtimes.NAME] table. It has no keys yet.
type RuntimeHandler struct{}

// Cgroup drivers.
const (
	CgroupfsDriver = "cgroupfs"
	SystemdDriver  = "systemd"
)

// Default returns the built-in configuration: a node needs no file.
func Default() Config {
	return Config{
		Listen:                  "unix:///run/cri-mini/cri-mini.sock",
		Root:                    "/var/lib/cri-mini",
		RunRoot:                 "/run/cri-mini",
		CNIConfigDir:            "/etc/cni/net.d",
		CNIPluginDir:            "/opt/cni/bin:/usr/lib/cni",
		CgroupDriver:            CgroupfsDriver,
		StreamAddress:           "127.0.0.1:0",
		EnableUnprivilegedPorts: true,
		EnableUnprivilegedICMP:  true,
		RegistryMirrors:         map[string]string{},
		MaxLayerSize:            image.DefaultMaxLayerBytes,
		Image:                   defaultImageConfig(),
		EnableCDI:               true,
		CDISpecDirs:             []string{"/etc/cdi", "/var/run/cdi"},
		Runtimes:                map[string]RuntimeHandler{},
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
	c.Image.fillNil()
	if c.Runtimes == nil {
		c.Runtimes = map[string]RuntimeHandler{}
	}
	return nil
}

// Handlers lists the runtime handlers: the default "" first, then the
// configured ones by name.
func (c Config) Handlers() []string {
	names := []string{""}
	for n := range c.Runtimes {
		names = append(names, n)
	}
	slices.Sort(names[1:])
	return names
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
	unprivilegedPorts  bool
	unprivilegedICMP   bool
	deviceOwnership    bool
	usernsHostRoot     bool
	enableCDI          bool
	cdiSpecDirs        listFlag
	maxLayerSize       int64
	image              *imageFlags
	runtimeHandlers    listFlag
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
	fs.BoolVar(&f.unprivilegedPorts, "enable-unprivileged-ports", d.EnableUnprivilegedPorts, "pods with a network of their own get net.ipv4.ip_unprivileged_port_start=0")
	fs.BoolVar(&f.unprivilegedICMP, "enable-unprivileged-icmp", d.EnableUnprivilegedICMP, "pods with a network of their own get net.ipv4.ping_group_range=\"0 2147483647\"")
	fs.BoolVar(&f.deviceOwnership, "device-ownership-from-security-context", d.DeviceOwnershipFromSecurityContext, "container devices owned by the container's run_as_user and run_as_group")
	fs.BoolVar(&f.usernsHostRoot, "userns-allow-host-root", d.UsernsAllowHostRoot, "admit pod user namespaces whose range maps the host's uid or gid 0")
	fs.BoolVar(&f.enableCDI, "enable-cdi", d.EnableCDI, "resolve containers' CDI devices in the CDI spec directories")
	fs.Var(&f.cdiSpecDirs, "cdi-spec-dir", "directory of CDI specs (repeatable; replaces the configured list, later ones win)")
	fs.Int64Var(&f.maxLayerSize, "max-layer-size", d.MaxLayerSize, "bytes of file content one image layer may unpack to")
	f.image = registerImageFlags(fs, d.Image)
	fs.Var(&f.runtimeHandlers, "runtime-handler", "NAME: a runtime handler besides the default one, as a [runtimes.NAME] table (repeatable)")
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
		case "enable-unprivileged-ports":
			c.EnableUnprivilegedPorts = f.unprivilegedPorts
		case "enable-unprivileged-icmp":
			c.EnableUnprivilegedICMP = f.unprivilegedICMP
		case "device-ownership-from-security-context":
			c.DeviceOwnershipFromSecurityContext = f.deviceOwnership
		case "userns-allow-host-root":
			c.UsernsAllowHostRoot = f.usernsHostRoot
		case "enable-cdi":
			c.EnableCDI = f.enableCDI
		case "cdi-spec-dir":
			c.CDISpecDirs = slices.Clone(f.cdiSpecDirs)
		case "max-layer-size":
			c.MaxLayerSize = f.maxLayerSize
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
		case "runtime-handler":
			if c.Runtimes == nil {
				c.Runtimes = map[string]RuntimeHandler{}
			}
			for _, n := range f.runtimeHandlers {
				c.Runtimes[n] = RuntimeHandler{}
			}
		default:
			err = errors.Join(err, f.image.apply(fl.Name, &c.Image))
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
	for _, dir := range c.CDISpecDirs {
		if !filepath.IsAbs(dir) {
			bad("cdi_spec_dirs", "%q is not an absolute path", dir)
		}
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
	if c.MaxLayerSize <= 0 {
		bad("max_layer_size", "%d is not a positive number of bytes", c.MaxLayerSize)
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
	errs = append(errs, c.Image.validate()...)
	for name := range c.Runtimes {
		if !handlerName.MatchString(name) {
			bad("runtimes", "handler name %q: want a DNS label (a-z, 0-9 and '-', at most 63), as a RuntimeClass's handler", name)
		}
	}
	return errors.Join(errs...)
}

// handlerName is what Kubernetes allows as a RuntimeClass handler.
var handlerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

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
	{"verbosity", "Log verbosity (klog -v): 0 logs the failed CRI calls and those that change pods,\n# containers or images, with their IDs; 2 logs every CRI call with its duration and code."},
	{"insecure_registries", "Registries (HOST[:PORT]) reached over plain HTTP or with unverified TLS."},
	{"enable_unprivileged_ports", "Pods with a network namespace of their own get net.ipv4.ip_unprivileged_port_start=0\n# (a non-root server may bind :80), unless they set it; as containerd does."},
	{"enable_unprivileged_icmp", "Pods with a network namespace of their own get net.ipv4.ping_group_range=\"0 2147483647\"\n# (ping without CAP_NET_RAW), unless they set it; as containerd does."},
	{"device_ownership_from_security_context", "Devices given to a container are owned by its run_as_user and run_as_group (0 when\n# unset) instead of the host node's owner, as containerd's key of this name."},
	{"userns_allow_host_root", "Admit a pod user namespace (hostUsers: false) whose range maps the host's uid or\n# gid 0: a process escaping such a pod would be the host's root."},
	{"enable_cdi", "Resolve the CDI devices containers ask for (CDI_devices, cdi.k8s.io/ annotations)\n# in the CDI specs of cdi_spec_dirs; off, such requests are ignored (as containerd)."},
	{"cdi_spec_dirs", "Directories of CDI specs (JSON or YAML), later ones winning over earlier ones."},
	{"max_layer_size", "Bytes of file content one image layer may unpack to; a layer past it (a\n# decompression bomb) fails its pull and leaves nothing behind."},
	{"registry_mirrors", "Mirrors by registry host: HOST = \"URL\". Pulls from HOST go to URL first."},
	{"runtimes", "Runtime handlers besides the default one (\"\"), a table each: [runtimes.NAME], NAME\n# as a RuntimeClass's handler names it. They run pods as the default handler does."},
}

// Render prints c as a complete TOML file with a comment above every key; it
// parses back to c.
func (c Config) Render() ([]byte, error) {
	values := map[string]any{
		"listen": c.Listen, "root": c.Root, "runroot": c.RunRoot,
		"cni_config_dir": c.CNIConfigDir, "cni_plugin_dir": c.CNIPluginDir,
		"cgroup_driver": c.CgroupDriver, "stream_address": c.StreamAddress,
		"metrics_address": c.MetricsAddress, "verbosity": c.Verbosity,
		"insecure_registries":                    nonNil(c.InsecureRegistries),
		"enable_unprivileged_ports":              c.EnableUnprivilegedPorts,
		"enable_unprivileged_icmp":               c.EnableUnprivilegedICMP,
		"max_layer_size":                         c.MaxLayerSize,
		"device_ownership_from_security_context": c.DeviceOwnershipFromSecurityContext,
		"enable_cdi":                             c.EnableCDI,
		"userns_allow_host_root":                 c.UsernsAllowHostRoot,
		"cdi_spec_dirs":                          nonNil(c.CDISpecDirs),
	}
	var b bytes.Buffer
	b.WriteString("# cri-mini configuration (cri-mini --config FILE). Flags override these keys.\n")
	for _, kd := range keyDocs {
		fmt.Fprintf(&b, "\n# %s\n", kd.doc)
		if kd.key == "registry_mirrors" {
			b.WriteString("# Example: \"registry.example.com\" = \"http://mirror.local:5000\"\n[registry_mirrors]\n")
			if err := writeStringTable(&b, c.RegistryMirrors); err != nil {
				return nil, err
			}
			continue
		}
		if kd.key == "runtimes" {
			b.WriteString("# Example: [runtimes.test-handler]\n")
			for _, n := range c.Handlers()[1:] {
				fmt.Fprintf(&b, "[runtimes.%s]\n", n) // a DNS label: a bare key
			}
			continue
		}
		v, err := tomlValue(values[kd.key])
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s = %s\n", kd.key, v)
	}
	if err := c.Image.render(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeStringTable writes m's entries as TOML lines, sorted by key.
func writeStringTable(b *bytes.Buffer, m map[string]string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		k, err := tomlValue(key)
		if err != nil {
			return err
		}
		v, err := tomlValue(m[key])
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "%s = %s\n", k, v)
	}
	return nil
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
