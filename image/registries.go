package image

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// registries knows where each registry's images are pulled from: the
// hosts.toml directories under the config path, the --registry-mirror and
// --insecure-registry shorthands, or else the registry itself.
//
// A registry's configuration is read again at the first pull after any file
// it was read from changed (hosts.toml, its directory, its CA and client
// certificates), or after a more specific directory appeared: a few stat
// calls per pull, as containerd reads the directory at every pull. That
// needs no watch (inotify descriptors, a goroutine) and no SIGHUP, works
// alike for the daemon and `cri-mini image pull`, and an edit takes effect
// at the only moment it matters, the next pull.
type registries struct {
	roots    []string          // config_path directories, the first holding a match wins
	insecure []string          // hosts reached over plain HTTP or unverified TLS
	mirrors  map[string]string // registry -> mirror URL (--registry-mirror)
	base     *http.Transport   // shared by endpoints without TLS, proxy or dial settings

	mu    sync.Mutex
	cache map[string]*registryHosts // by registry
}

// registryHosts is a registry's configuration as last read.
type registryHosts struct {
	dir       string // the host directory it came from ("" for flags and defaults)
	source    string // what to name in messages: a file, a directory or "flags"
	files     []fileStamp
	endpoints []*endpoint
}

// endpoint is one place a registry's images are pulled from.
type endpoint struct {
	hostSpec
	registry  string // the registry it serves, as image names spell it ("docker.io")
	host      string // host[:port] as go-containerregistry names it (index.docker.io for docker.io)
	plainHTTP bool   // http:// or declared insecure
	transport http.RoundTripper
}

func (e *endpoint) String() string { return e.url.Scheme + "://" + e.url.Host + e.url.Path }

// mirror tells whether the endpoint is another host than the registry.
func (e *endpoint) mirror() bool { return canonicalHost(e.url.Host) != canonicalHost(e.registry) }

// canonicalHost spells Docker Hub's several names one way.
func canonicalHost(h string) string {
	if h == dockerHub || h == "registry-1.docker.io" {
		return dockerHubIndex
	}
	return h
}

func newRegistries(configPath string, insecure []string, mirrors map[string]string) *registries {
	var roots []string
	for _, r := range filepath.SplitList(configPath) {
		if r != "" {
			roots = append(roots, r)
		}
	}
	base := remote.DefaultTransport.(*http.Transport).Clone()
	return &registries{roots: roots, insecure: insecure, mirrors: mirrors, base: base, cache: map[string]*registryHosts{}}
}

// hosts returns the endpoints of registry, reading its configuration again
// if it changed. A broken file is an error naming it (FailedPrecondition):
// pulls from that registry fail until it is fixed, rather than fall back to
// a configuration the operator meant to replace (an air-gapped node must not
// reach the internet because of a typo).
func (r *registries) hosts(registry string) (*registryHosts, error) {
	dir, err := r.hostDir(registry)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cache[registry]
	if old != nil && old.dir == dir && !old.changed() {
		return old, nil
	}
	h, err := r.load(registry, dir)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %s: %w", registry, h.source, err)
	}
	if old != nil {
		old.closeIdle()
	}
	r.cache[registry] = h
	eps := make([]string, len(h.endpoints))
	for i, ep := range h.endpoints {
		eps[i] = ep.String()
	}
	klog.V(1).InfoS("Registry configuration read", "registry", registry, "from", h.source, "endpoints", eps)
	return h, nil
}

// hostDir finds registry's directory under the config path as containerd
// does: in each root, "host_port_", "host:port", then "_default". A
// --registry-mirror for the registry goes before a "_default" directory.
func (r *registries) hostDir(registry string) (string, error) {
	for _, root := range r.roots {
		names := []string{registry, "_default"}
		if d := hostDirName(registry); d != registry {
			names = slices.Insert(names, 0, d)
		}
		for _, n := range names {
			if n == "_default" && r.mirrors[registry] != "" {
				continue
			}
			dir := filepath.Join(root, n)
			st, err := os.Stat(dir)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return "", fmt.Errorf("registry %s: %w: %w", registry, err, errdefs.ErrFailedPrecondition)
			}
			if st.IsDir() {
				return dir, nil
			}
		}
	}
	return "", nil
}

// load reads registry's configuration from dir, or from the flags when dir is "".
func (r *registries) load(registry, dir string) (*registryHosts, error) {
	h := &registryHosts{dir: dir, source: "flags"}
	var specs []hostSpec
	switch {
	case dir == "":
		var err error
		if specs, err = r.flagSpecs(registry); err != nil {
			return h, err
		}
	default:
		if m := r.mirrors[registry]; m != "" {
			klog.InfoS("A hosts.toml directory replaces --registry-mirror for its registry", "registry", registry, "dir", dir, "ignored mirror", m)
		}
		file := filepath.Join(dir, hostsFileName)
		h.files = append(h.files, stamp(dir), stamp(file))
		data, err := fsutil.ReadRegularFile(file, maxHostsFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			h.source = dir
			entries, err := os.ReadDir(dir)
			if err != nil {
				return h, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
			}
			names := make([]string, len(entries))
			for i, e := range entries {
				names[i] = e.Name()
			}
			spec, err := certsDirSpec(registry, dir, names)
			if err != nil {
				return h, err
			}
			specs = []hostSpec{spec}
		case err != nil:
			h.source = file
			return h, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		default:
			h.source = file
			if specs, err = parseHostsFile(registry, dir, data); err != nil {
				return h, err
			}
		}
	}
	for _, spec := range specs {
		ep, files, err := r.endpoint(registry, spec)
		if err != nil {
			h.closeIdle()
			return h, fmt.Errorf("%s: %w", spec.url.Host, err)
		}
		h.endpoints = append(h.endpoints, ep)
		h.files = append(h.files, files...)
	}
	return h, nil
}

// flagSpecs are a registry's endpoints from the shorthands: its
// --registry-mirror, then the registry itself.
func (r *registries) flagSpecs(registry string) ([]hostSpec, error) {
	var specs []hostSpec
	if m := r.mirrors[registry]; m != "" {
		u, err := endpointURL(m, false)
		if err != nil {
			return nil, fmt.Errorf("--registry-mirror %s=%s: %w", registry, m, err)
		}
		specs = append(specs, hostSpec{url: u, pull: true, resolve: true})
	}
	u, err := endpointURL(registry, false)
	if err != nil {
		return nil, err
	}
	return append(specs, hostSpec{url: u, pull: true, resolve: true}), nil
}

// endpoint completes a spec: the host as go-containerregistry names it,
// --insecure-registry, and a transport with the spec's TLS, proxy and dial
// settings. It returns the files it read.
func (r *registries) endpoint(registry string, spec hostSpec) (*endpoint, []fileStamp, error) {
	ep := &endpoint{hostSpec: spec, registry: registry, host: spec.url.Host}
	if ep.host == dockerHub {
		ep.host = dockerHubIndex
	}
	if slices.Contains(r.insecure, spec.url.Host) {
		ep.plainHTTP, ep.skipVerify = true, true
	}
	ep.plainHTTP = ep.plainHTTP || spec.url.Scheme == "http"
	if !ep.skipVerify && len(ep.caFiles) == 0 && len(ep.clientPairs) == 0 && ep.dialTimeout == 0 && ep.proxy == nil {
		ep.transport = r.base
		return ep, nil, nil
	}
	t := r.base.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{}
	}
	t.TLSClientConfig.InsecureSkipVerify = ep.skipVerify
	var files []fileStamp
	read := func(kind, f string) ([]byte, error) {
		files = append(files, stamp(f))
		data, err := fsutil.ReadRegularFile(f, maxHostsFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", kind, err, errdefs.ErrFailedPrecondition)
		}
		return data, nil
	}
	if len(ep.caFiles) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, f := range ep.caFiles {
			data, err := read("ca", f)
			if err != nil {
				return nil, nil, err
			}
			if !pool.AppendCertsFromPEM(data) {
				return nil, nil, fmt.Errorf("ca %s holds no PEM certificate: %w", f, errdefs.ErrFailedPrecondition)
			}
		}
		t.TLSClientConfig.RootCAs = pool
	}
	for _, p := range ep.clientPairs {
		cert, err := read("client certificate", p[0])
		if err != nil {
			return nil, nil, err
		}
		key := cert
		if p[1] != "" {
			if key, err = read("client key", p[1]); err != nil {
				return nil, nil, err
			}
		}
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, nil, fmt.Errorf("client %s: %v: %w", p[0], err, errdefs.ErrFailedPrecondition)
		}
		t.TLSClientConfig.Certificates = append(t.TLSClientConfig.Certificates, pair)
	}
	if ep.dialTimeout > 0 {
		t.DialContext = (&net.Dialer{Timeout: ep.dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	if ep.proxy != nil {
		t.Proxy = http.ProxyURL(ep.proxy)
	}
	ep.transport = t
	return ep, files, nil
}

// closeIdle closes the idle connections of the endpoints' own transports
// (a configuration replaced by a newer one).
func (h *registryHosts) closeIdle() {
	for _, ep := range h.endpoints {
		if t, ok := ep.transport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
	}
}

// fileStamp identifies a version of a file (or its absence).
type fileStamp struct {
	path  string
	ino   uint64
	size  int64
	mtime int64
}

func stamp(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{path: path}
	}
	return fileStamp{path: path, ino: st.Sys().(*syscall.Stat_t).Ino, size: st.Size(), mtime: st.ModTime().UnixNano()}
}

func (h *registryHosts) changed() bool { return stampsChanged(h.files) }

// stampsChanged tells whether any of the files is not as stamped.
func stampsChanged(files []fileStamp) bool {
	for _, f := range files {
		if stamp(f.path) != f {
			return true
		}
	}
	return false
}

// check reads every registry directory under the config path, so that a
// daemon with a broken hosts.toml fails at its start, naming the file.
func (r *registries) check() error {
	var errs []error
	for _, root := range r.roots {
		entries, err := os.ReadDir(root)
		if errors.Is(err, fs.ErrNotExist) {
			klog.InfoS("The registry config path does not exist (yet); registries are reached directly until it does", "dir", root)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("registry config path: %w", err))
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			registry := e.Name()
			if registry == "_default" {
				registry = "registry.invalid" // any name: _default's endpoints do not depend on it but for the server
			} else if strings.HasSuffix(registry, "_") && strings.Count(registry, "_") >= 2 {
				trimmed := strings.TrimSuffix(registry, "_")
				i := strings.LastIndex(trimmed, "_")
				registry = trimmed[:i] + ":" + trimmed[i+1:]
			}
			h, err := r.load(registry, filepath.Join(root, e.Name()))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", h.source, err))
				continue
			}
			h.closeIdle()
		}
	}
	return errors.Join(errs...)
}
