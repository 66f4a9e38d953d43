package image

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// A registry's hosts are configured as containerd configures them: under a
// config_path directory, one directory per registry host ("docker.io",
// "registry.example.com:5000" or "registry.example.com_5000_", "_default"
// for every host without its own) holding a hosts.toml:
//
//	server = "https://registry.example.com"   # the upstream; the host itself when absent
//	mirrors_only = true                       # cri-mini's own key: never contact the server
//	[host."https://mirror.local:5000"]        # mirrors, tried in file order before the server
//	  capabilities = ["pull", "resolve"]
//	  ca = "mirror-ca.pem"                    # relative paths are below the host's directory
//	  client = [["client.crt", "client.key"]]
//	  skip_verify = false
//	  override_path = false
//	  dial_timeout = "2s"
//	  proxy = "http://proxy.local:3128"
//	  [host."https://mirror.local:5000".header]
//	    x-custom = "value"
//
// The top level takes the same per-host keys for the server. A directory
// without hosts.toml is read in Docker's certs.d layout (*.crt CAs,
// *.cert/*.key client pairs, for the server).

// hostsFileName is the file in a registry's directory.
const hostsFileName = "hosts.toml"

// maxHostsFile bounds what is read of an operator's hosts.toml or
// certificate file (they are a few KiB).
const maxHostsFile = 1 << 20

// hostFields are the keys a host's table and the top level share.
type hostFields struct {
	Capabilities []string       `toml:"capabilities"`
	CA           any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   bool           `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
	DialTimeout  string         `toml:"dial_timeout"`
	Proxy        string         `toml:"proxy"`
}

// hostsFile is a hosts.toml as written.
type hostsFile struct {
	Server      string                `toml:"server"`
	MirrorsOnly bool                  `toml:"mirrors_only"`
	Host        map[string]hostFields `toml:"host"`
	hostFields
}

// hostSpec is one endpoint as the operator described it, before any
// certificate is read.
type hostSpec struct {
	url           *url.URL // scheme, host and API root ("/v2" unless override_path)
	pull, resolve bool
	caFiles       []string
	clientPairs   [][2]string // certificate and key files; key "" when the certificate file holds it
	skipVerify    bool
	header        http.Header
	dialTimeout   time.Duration
	proxy         *url.URL
}

// parseHostsFile reads a hosts.toml of registry's directory dir: the mirrors
// in file order, then the server unless mirrors_only. Relative file names
// are made absolute below dir; no file is read.
func parseHostsFile(registry, dir string, data []byte) ([]hostSpec, error) {
	var f hostsFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrFailedPrecondition)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s (cri-mini reads containerd's keys server, capabilities, ca, client, skip_verify, header, override_path, dial_timeout, proxy, and its own mirrors_only): %w",
			strings.Join(keys, ", "), errdefs.ErrFailedPrecondition)
	}
	var specs []hostSpec
	// A TOML table has no order; the file's order of [host."..."] tables is
	// the order mirrors are tried in, so it is taken from the keys' order.
	for _, key := range md.Keys() {
		if len(key) != 2 || key[0] != "host" {
			continue
		}
		spec, err := parseHost(key[1], dir, f.Host[key[1]])
		if err != nil {
			return nil, fmt.Errorf("[host.%q]: %w", key[1], err)
		}
		specs = append(specs, spec)
	}
	if f.MirrorsOnly {
		if len(specs) == 0 {
			return nil, fmt.Errorf("mirrors_only is set but no [host.\"...\"] mirror is listed: %w", errdefs.ErrFailedPrecondition)
		}
		return specs, nil
	}
	server := f.Server
	if server == "" {
		server = registry
	}
	spec, err := parseHost(server, dir, f.hostFields)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", server, err)
	}
	return append(specs, spec), nil
}

// parseHost checks one endpoint's keys.
func parseHost(rawURL, dir string, h hostFields) (hostSpec, error) {
	bad := func(format string, args ...any) (hostSpec, error) {
		return hostSpec{}, fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrFailedPrecondition)
	}
	u, err := endpointURL(rawURL, h.OverridePath)
	if err != nil {
		return hostSpec{}, err
	}
	spec := hostSpec{url: u, skipVerify: h.SkipVerify}
	if len(h.Capabilities) == 0 {
		spec.pull, spec.resolve = true, true
	}
	for _, c := range h.Capabilities {
		switch strings.ToLower(c) {
		case "pull":
			spec.pull = true
		case "resolve":
			spec.resolve = true
		case "push": // cri-mini never pushes
		default:
			return bad("capability %q (want pull, resolve or push)", c)
		}
	}
	if spec.caFiles, err = stringOrList("ca", h.CA); err != nil {
		return hostSpec{}, err
	}
	for i, f := range spec.caFiles {
		spec.caFiles[i] = underDir(dir, f)
	}
	if spec.clientPairs, err = clientPairs(h.Client); err != nil {
		return hostSpec{}, err
	}
	for i, p := range spec.clientPairs {
		spec.clientPairs[i][0] = underDir(dir, p[0])
		if p[1] != "" {
			spec.clientPairs[i][1] = underDir(dir, p[1])
		}
	}
	if len(h.Header) > 0 {
		spec.header = http.Header{}
		keys := make([]string, 0, len(h.Header))
		for k := range h.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			values, err := stringOrList("header "+k, h.Header[k])
			if err != nil {
				return hostSpec{}, err
			}
			for _, v := range values {
				spec.header.Add(k, v)
			}
		}
	}
	if h.DialTimeout != "" {
		if spec.dialTimeout, err = time.ParseDuration(h.DialTimeout); err != nil || spec.dialTimeout <= 0 {
			return bad("dial_timeout %q is not a positive duration (\"2s\")", h.DialTimeout)
		}
	}
	if h.Proxy != "" {
		p, err := url.Parse(h.Proxy)
		if err != nil || p.Host == "" || !slices.Contains([]string{"http", "https", "socks5", "socks5h"}, p.Scheme) ||
			strings.Trim(p.Path, "/") != "" || p.RawQuery != "" || p.Fragment != "" {
			return bad("proxy %q: want SCHEME://HOST[:PORT] with scheme http, https, socks5 or socks5h", h.Proxy)
		}
		spec.proxy = p
	}
	return spec, nil
}

// endpointURL parses a server or mirror URL as containerd does: https when
// no scheme is given, and "/v2" appended to the path (the API root) unless
// overridePath says the path is the API root already.
func endpointURL(raw string, overridePath bool) (*url.URL, error) {
	s := raw
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		if strings.Contains(s, "://") {
			return nil, fmt.Errorf("%q: only http:// and https:// registries are supported: %w", raw, errdefs.ErrFailedPrecondition)
		}
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q is not a registry URL (scheme://host[:port][/path]): %w", raw, errdefs.ErrFailedPrecondition)
	}
	p := path.Clean("/" + u.Path)
	if p == "/" {
		p = ""
	}
	if !overridePath && !strings.HasSuffix(p, "/v2") {
		p += "/v2"
	}
	u.Path = p
	return u, nil
}

// stringOrList takes a TOML string or array of strings.
func stringOrList(key string, v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s: element %d is %T, want a string: %w", key, i, e, errdefs.ErrFailedPrecondition)
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s is %T, want a string or an array of strings: %w", key, v, errdefs.ErrFailedPrecondition)
}

// clientPairs takes containerd's three forms of "client": a file holding
// certificate and key, an array of such files, or an array of [cert, key].
func clientPairs(v any) ([][2]string, error) {
	bad := fmt.Errorf("client: want \"file.pem\", [\"a.pem\", ...] or [[\"cert.pem\", \"key.pem\"], ...]: %w", errdefs.ErrFailedPrecondition)
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return [][2]string{{v, ""}}, nil
	case []any:
		var pairs [][2]string
		for _, e := range v {
			switch e := e.(type) {
			case string:
				pairs = append(pairs, [2]string{e, ""})
			case []any:
				files, err := stringOrList("client", e)
				if err != nil || len(files) != 2 {
					return nil, bad
				}
				pairs = append(pairs, [2]string{files[0], files[1]})
			default:
				return nil, bad
			}
		}
		return pairs, nil
	}
	return nil, bad
}

func underDir(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// certsDirSpec is the server of a directory in Docker's certs.d layout:
// *.crt files are CAs, each *.cert a client certificate with the *.key of
// the same name (or the key inside it).
func certsDirSpec(registry, dir string, names []string) (hostSpec, error) {
	u, err := endpointURL(registry, false)
	if err != nil {
		return hostSpec{}, err
	}
	spec := hostSpec{url: u, pull: true, resolve: true}
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, ".crt"):
			spec.caFiles = append(spec.caFiles, filepath.Join(dir, n))
		case strings.HasSuffix(n, ".cert"):
			pair := [2]string{filepath.Join(dir, n), ""}
			if key := strings.TrimSuffix(n, ".cert") + ".key"; slices.Contains(names, key) {
				pair[1] = filepath.Join(dir, key)
			}
			spec.clientPairs = append(spec.clientPairs, pair)
		}
	}
	return spec, nil
}

// hostDirName is a registry's directory name with its port spelled
// "_port_", as containerd also accepts (":" is awkward in some tools).
func hostDirName(registry string) string {
	if i := strings.LastIndex(registry, ":"); i > 0 {
		return registry[:i] + "_" + registry[i+1:] + "_"
	}
	return registry
}
