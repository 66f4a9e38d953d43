package image

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/registrytest"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// newTLSRegistry serves a test registry over HTTPS with a certificate of
// pki's CA, demanding a client certificate of that CA when mTLS is set.
func newTLSRegistry(t *testing.T, pki *registrytest.PKI, mTLS bool) *testRegistry {
	t.Helper()
	return newHookedRegistry(t, registrytest.Options{TLS: pki, ClientCerts: mTLS})
}

// writeHosts writes dir/hostDir/hosts.toml (and the directory) with
// content, in which every $NAME is replaced by vars[NAME]; "" as content
// makes only the directory.
func writeHosts(t *testing.T, dir, hostDir, content string, vars map[string]string) string {
	t.Helper()
	d := filepath.Join(dir, hostDir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if content == "" {
		return d
	}
	for k, v := range vars {
		content = strings.ReplaceAll(content, "$"+k, v)
	}
	// Written beside and renamed, as editors and config management do.
	tmp := filepath.Join(d, ".hosts.toml.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d, hostsFileName)); err != nil {
		t.Fatal(err)
	}
	return d
}

func copyTestFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tryPull(s *Store, ref string) (*Image, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.Pull(ctx, ref, PullOptions{})
}

// TestHostsTLSWithTestCA: a registry whose certificate only a CA made in
// the test vouches for is refused until its hosts.toml names that CA (by a
// path relative to the host's directory); the file written while the store
// is open takes effect at the next pull.
func TestHostsTLSWithTestCA(t *testing.T) {
	roottest.Require(t)
	pki := registrytest.NewPKI(t)
	reg := newTLSRegistry(t, pki, false)
	reg.push(t, "app:1", imageOf(t, layer(t, file("tls", "ok"))))
	cfg := t.TempDir()
	s := openStore(t, nil, Options{RegistryConfigPath: cfg})

	_, err := tryPull(s, reg.host+"/app:1")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("pull from a registry of an unknown CA: %v, want a certificate error", err)
	}
	dir := writeHosts(t, cfg, reg.host, `ca = "ca.pem"`, nil)
	copyTestFile(t, pki.CAFile, filepath.Join(dir, "ca.pem"))
	img, err := tryPull(s, reg.host+"/app:1")
	if err != nil {
		t.Fatalf("pull with the CA in hosts.toml: %v", err)
	}
	if img.RepoTags[0] != reg.host+"/app:1" {
		t.Errorf("tags %v", img.RepoTags)
	}
}

// TestHostsClientCertificate: a registry that demands a client certificate
// (mTLS) serves the pull only with one of hosts.toml's client pairs, in
// each of containerd's three spellings.
func TestHostsClientCertificate(t *testing.T) {
	roottest.Require(t)
	pki := registrytest.NewPKI(t)
	reg := newTLSRegistry(t, pki, true)
	reg.push(t, "private:1", imageOf(t, layer(t, file("mtls", "ok"))))
	cfg := t.TempDir()
	dir := writeHosts(t, cfg, hostDirName(reg.host), "", nil) // the host_port_ spelling
	copyTestFile(t, pki.CAFile, filepath.Join(dir, "ca.pem"))
	both := append(must(os.ReadFile(pki.ClientCert)), must(os.ReadFile(pki.ClientKey))...)
	if err := os.WriteFile(filepath.Join(dir, "both.pem"), both, 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"CERT": pki.ClientCert, "KEY": pki.ClientKey}

	writeHosts(t, cfg, hostDirName(reg.host), `ca = "ca.pem"`, nil)
	s := openStore(t, nil, Options{RegistryConfigPath: cfg})
	if _, err := tryPull(s, reg.host+"/private:1"); err == nil {
		t.Fatal("pull without a client certificate succeeded")
	}
	for _, client := range []string{`[["$CERT", "$KEY"]]`, `"both.pem"`, `["both.pem"]`} {
		writeHosts(t, cfg, hostDirName(reg.host), "ca = \"ca.pem\"\nclient = "+client, vars)
		s := openStore(t, nil, Options{RegistryConfigPath: cfg})
		if _, err := tryPull(s, reg.host+"/private:1"); err != nil {
			t.Errorf("pull with client = %s: %v", client, err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestDeadFirstMirrorFallsThrough: the first mirror refuses connections,
// the second serves the image with the registry named in "ns"; the image
// keeps the registry's name and the registry itself is never asked.
func TestDeadFirstMirrorFallsThrough(t *testing.T) {
	roottest.Require(t)
	upstream, mirror := newTestRegistry(t), newTestRegistry(t)
	img := imageOf(t, layer(t, file("m", "from the mirror")))
	upstream.push(t, "team/app:1", img)
	mirror.push(t, "team/app:1", img)
	pushes := len(upstream.log())
	cfg := t.TempDir()
	writeHosts(t, cfg, upstream.host, `
[host."http://$DEAD"]
  capabilities = ["pull", "resolve"]
[host."http://$MIRROR"]
  capabilities = ["pull", "resolve"]
`, map[string]string{"DEAD": registrytest.DeadAddr(t), "MIRROR": mirror.host})
	s := openStore(t, upstream, Options{RegistryConfigPath: cfg})
	got := pull(t, s, upstream.host+"/team/app:1")
	if got.RepoTags[0] != upstream.host+"/team/app:1" {
		t.Errorf("tags %v, want the registry's name", got.RepoTags)
	}
	if extra := upstream.log()[pushes:]; len(extra) > 0 {
		t.Errorf("the registry was asked %d times though the second mirror served (first %s)", len(extra), extra[0].URL)
	}
	var manifests int
	for _, req := range mirror.log() {
		if strings.Contains(req.URL.Path, "/manifests/") && req.Method == http.MethodGet {
			manifests++
			if ns := req.URL.Query().Get("ns"); ns != upstream.host {
				t.Errorf("%s: ns=%q, want the registry %s", req.URL, ns, upstream.host)
			}
		}
	}
	if manifests == 0 {
		t.Error("the mirror served no manifest")
	}
}

// TestMirrorsOnlyNeverContactsUpstream: with mirrors_only (and with
// containerd's way, a mirror as the server) a pull whose mirrors fail
// fails, Unavailable, and the registry, which has the image, sees no
// request at all.
func TestMirrorsOnlyNeverContactsUpstream(t *testing.T) {
	for name, hosts := range map[string]string{
		"mirrors_only":     "mirrors_only = true\n[host.\"http://$DEAD\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
		"server is mirror": "server = \"http://$DEAD\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			upstream := newTestRegistry(t)
			upstream.push(t, "app:1", imageOf(t, layer(t, file("u", "upstream"))))
			pushes := len(upstream.log())
			cfg := t.TempDir()
			writeHosts(t, cfg, upstream.host, hosts, map[string]string{"DEAD": registrytest.DeadAddr(t)})
			s := openStore(t, upstream, Options{RegistryConfigPath: cfg})
			_, err := tryPull(s, upstream.host+"/app:1")
			if !errors.Is(err, errdefs.ErrUnavailable) {
				t.Errorf("pull with every mirror down: %v, want Unavailable", err)
			}
			if extra := upstream.log()[pushes:]; len(extra) > 0 {
				t.Errorf("the registry got %d requests (first %s %s)", len(extra), extra[0].Method, extra[0].URL)
			}
		})
	}
}

// TestPullOnlyMirrorDoesNotResolveTags: a mirror with only the "pull"
// capability is not asked what a tag means; the registry resolves it (one
// HEAD) and the content comes from the mirror by digest, so the mirror's
// own (different) image under the tag is not what is pulled.
func TestPullOnlyMirrorDoesNotResolveTags(t *testing.T) {
	roottest.Require(t)
	upstream, mirror := newTestRegistry(t), newTestRegistry(t)
	real := imageOf(t, layer(t, file("who", "upstream")))
	upstream.push(t, "app:1", real)
	mirror.push(t, "app:1", imageOf(t, layer(t, file("who", "a mirror's own idea of app:1"))))
	d, _ := real.Digest()
	mirror.push(t, "app@"+d.String(), real)
	pushes, mirrorPushes := len(upstream.log()), len(mirror.log())
	cfg := t.TempDir()
	writeHosts(t, cfg, upstream.host, "[host.\"http://$MIRROR\"]\n  capabilities = [\"pull\"]\n", map[string]string{"MIRROR": mirror.host})
	s := openStore(t, upstream, Options{RegistryConfigPath: cfg})
	got := pull(t, s, upstream.host+"/app:1")
	want, _ := real.ConfigName()
	if got.ID != want.String() {
		t.Errorf("pulled %s, want the registry's %s", got.ID, want)
	}
	var up []string
	for _, req := range upstream.log()[pushes:] {
		if req.URL.Path != "/v2/" {
			up = append(up, req.Method+" "+req.URL.Path)
		}
	}
	if len(up) != 1 || up[0] != "HEAD /v2/app/manifests/1" {
		t.Errorf("the registry answered %v, want one HEAD of the tag", up)
	}
	for _, req := range mirror.log()[mirrorPushes:] {
		if strings.HasSuffix(req.URL.Path, "/manifests/1") {
			t.Errorf("the pull-only mirror was asked for the tag: %s %s", req.Method, req.URL)
		}
	}
}

// TestOverridePath: a mirror whose API is not at /v2 is reached at the
// path its URL gives: with override_path the path is the API root, without
// it "/v2" is appended.
func TestOverridePath(t *testing.T) {
	roottest.Require(t)
	for _, c := range []struct{ url, root, extra string }{
		{"/artifactory/api/docker/remote", "/artifactory/api/docker/remote", "override_path = true"},
		{"/prefix", "/prefix/v2", ""},
	} {
		upstream, mirror := newTestRegistry(t), newTestRegistry(t)
		img := imageOf(t, layer(t, file("p", c.root)))
		mirror.push(t, "app:1", img)
		pushes := len(mirror.log())
		mirror.SetAPIRoot(c.root)
		cfg := t.TempDir()
		writeHosts(t, cfg, upstream.host, "[host.\"http://$MIRROR$PATH\"]\n  "+c.extra+"\n",
			map[string]string{"MIRROR": mirror.host, "PATH": c.url})
		s := openStore(t, upstream, Options{RegistryConfigPath: cfg})
		if _, err := tryPull(s, upstream.host+"/app:1"); err != nil {
			t.Errorf("mirror at %s (%s): %v", c.url, c.extra, err)
			continue
		}
		reqs := mirror.log()[pushes:]
		for _, r := range reqs {
			if !strings.HasPrefix(r.URL.Path, c.root+"/") {
				t.Errorf("mirror at %s: request %s outside the API root %s", c.url, r.URL.Path, c.root)
			}
		}
		if len(reqs) < 3 {
			t.Errorf("mirror at %s: %d requests, want a manifest and blobs", c.url, len(reqs))
		}
		if n := len(upstream.log()); n > 0 {
			t.Errorf("mirror at %s: the registry was asked %d times", c.url, n)
		}
	}
}

// TestHostHeaders: the [header] table of a mirror goes with every request
// to that mirror, a list as several values.
func TestHostHeaders(t *testing.T) {
	roottest.Require(t)
	upstream, mirror := newTestRegistry(t), newTestRegistry(t)
	mirror.push(t, "app:1", imageOf(t, layer(t, file("h", "headers"))))
	pushes := len(mirror.log())
	cfg := t.TempDir()
	writeHosts(t, cfg, upstream.host, `
[host."http://$MIRROR"]
  [host."http://$MIRROR".header]
    x-mirror-token = "t0k3n"
    x-multi = ["a", "b"]
`, map[string]string{"MIRROR": mirror.host})
	s := openStore(t, upstream, Options{RegistryConfigPath: cfg})
	pull(t, s, upstream.host+"/app:1")
	reqs := mirror.log()[pushes:]
	if len(reqs) == 0 {
		t.Fatal("the mirror got no request")
	}
	for _, req := range reqs {
		if got := req.Header.Get("X-Mirror-Token"); got != "t0k3n" {
			t.Errorf("%s %s: X-Mirror-Token %q", req.Method, req.URL.Path, got)
		}
		if got := req.Header.Values("X-Multi"); strings.Join(got, ",") != "a,b" {
			t.Errorf("%s %s: X-Multi %q", req.Method, req.URL.Path, got)
		}
	}
}

// TestHostDirectories: "_default" serves every registry without its own
// directory; a registry's own directory wins over it; a directory without
// hosts.toml is read in Docker's certs.d layout (ca.crt).
func TestHostDirectories(t *testing.T) {
	roottest.Require(t)
	pki := registrytest.NewPKI(t)
	tlsReg := newTLSRegistry(t, pki, false)
	tlsReg.push(t, "app:1", imageOf(t, layer(t, file("d", "certs.d"))))
	upstream, mirror := newTestRegistry(t), newTestRegistry(t)
	mirror.push(t, "app:1", imageOf(t, layer(t, file("d", "default"))))
	cfg := t.TempDir()
	writeHosts(t, cfg, "_default", "mirrors_only = true\n[host.\"http://$MIRROR\"]\n", map[string]string{"MIRROR": mirror.host})
	copyTestFile(t, pki.CAFile, filepath.Join(writeHosts(t, cfg, tlsReg.host, "", nil), "ca.crt"))
	s := openStore(t, upstream, Options{RegistryConfigPath: cfg})
	if _, err := tryPull(s, upstream.host+"/app:1"); err != nil {
		t.Errorf("pull through _default's mirror: %v", err)
	}
	if n := len(upstream.log()); n > 0 {
		t.Errorf("_default says mirrors only, yet the registry got %d requests", n)
	}
	if _, err := tryPull(s, tlsReg.host+"/app:1"); err != nil {
		t.Errorf("pull with a certs.d ca.crt: %v", err)
	}
}

// TestBrokenHostsFile: a hosts.toml that does not parse, or has a key
// cri-mini does not know, fails the registry's pulls with
// FailedPrecondition naming the file (never a silent fallback to the
// registry), and the daemon's start-up check names it too.
func TestBrokenHostsFile(t *testing.T) {
	upstream := newTestRegistry(t)
	upstream.push(t, "app:1", imageOf(t, layer(t, file("b", "broken"))))
	pushes := len(upstream.log())
	for content, says := range map[string]string{
		"[host.\"http://x\"\ncapabilities = [\"pull\"]": "hosts.toml",
		"mirror_only = true\n[host.\"http://x\"]\n":     "unknown key mirror_only",
		"[host.\"http://x\"]\ncapabilities = [\"pul\"]": `capability "pul"`,
		"[host.\"ftp://x\"]\n":                          "only http:// and https://",
		"ca = \"missing.pem\"\n":                        "missing.pem",
	} {
		cfg := t.TempDir()
		writeHosts(t, cfg, upstream.host, content, nil)
		s := openStore(t, upstream, Options{RegistryConfigPath: cfg})
		_, err := tryPull(s, upstream.host+"/app:1")
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), says) || !strings.Contains(err.Error(), cfg) {
			t.Errorf("hosts.toml %q: %v, want FailedPrecondition naming the file and %q", content, err, says)
		}
		if err := s.CheckConfig(); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("hosts.toml %q: start-up check: %v", content, err)
		}
	}
	if n := len(upstream.log()) - pushes; n > 0 {
		t.Errorf("the registry got %d requests through broken configurations", n)
	}
}

// TestInsecureRegistryShorthand: --insecure-registry lets a registry with
// a certificate nobody vouches for serve (verification skipped), and
// --registry-mirror is a one-mirror hosts.toml.
func TestInsecureRegistryShorthand(t *testing.T) {
	roottest.Require(t)
	pki := registrytest.NewPKI(t)
	reg := newTLSRegistry(t, pki, false)
	reg.push(t, "app:1", imageOf(t, layer(t, file("i", "insecure"))))
	s := openStore(t, nil, Options{InsecureRegistries: []string{reg.host}})
	if _, err := tryPull(s, reg.host+"/app:1"); err != nil {
		t.Errorf("pull from an --insecure-registry with an unknown CA: %v", err)
	}
	upstream, mirror := newTestRegistry(t), newTestRegistry(t)
	mirror.push(t, "app:1", imageOf(t, layer(t, file("i", "mirror"))))
	s = openStore(t, upstream, Options{Mirrors: map[string]string{upstream.host: "http://" + mirror.host}})
	if _, err := tryPull(s, upstream.host+"/app:1"); err != nil {
		t.Errorf("pull through --registry-mirror: %v", err)
	}
	if n := len(upstream.log()); n > 0 {
		t.Errorf("the registry got %d requests although its mirror served", n)
	}
}

// TestParseHostsFileContainerdExamples reads the examples of containerd's
// docs/hosts.md as they are.
func TestParseHostsFileContainerdExamples(t *testing.T) {
	dir := "/etc/cri-mini/certs.d/docker.io"
	for _, c := range []struct {
		file string
		want []string // endpoint URL and capabilities
	}{
		{`server = "https://docker.io"
[host."https://registry-1.docker.io"]
  capabilities = ["pull", "resolve"]`, []string{"https://registry-1.docker.io/v2 pull,resolve", "https://docker.io/v2 pull,resolve"}},
		{`server = "https://registry-1.docker.io"    # Exclude this to not use upstream
[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest from this host
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"`, []string{"https://public-mirror.example.com/v2 pull", "https://docker-mirror.internal/v2 pull,resolve", "https://registry-1.docker.io/v2 pull,resolve"}},
		{`[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true
[host."https://non-compliant-mirror.registry/v2/upstream"]
  capabilities = ["pull"]
  override_path = true
[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]
  [host."https://test-1.registry".header]
    x-custom-2 = ["value1", "value2"]`, []string{"https://mirror-bak.registry/us/v2 pull", "https://non-compliant-mirror.registry/v2/upstream pull",
			"https://test-1.registry/v2 pull,resolve", "https://docker.io/v2 pull,resolve"}},
	} {
		specs, err := parseHostsFile("docker.io", dir, []byte(c.file))
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		var got []string
		for _, s := range specs {
			var caps []string
			if s.pull {
				caps = append(caps, "pull")
			}
			if s.resolve {
				caps = append(caps, "resolve")
			}
			got = append(got, s.url.String()+" "+strings.Join(caps, ","))
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s:\n got %q\nwant %q", c.file, got, c.want)
		}
	}
	specs, err := parseHostsFile("docker.io", dir, []byte(`[host."https://m"]
  ca = "docker-mirror.crt"
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"], ["rel.pem", ""]]`))
	if err != nil {
		t.Fatal(err)
	}
	if specs[0].caFiles[0] != dir+"/docker-mirror.crt" || specs[0].clientPairs[1] != [2]string{dir + "/rel.pem", ""} ||
		specs[0].clientPairs[0] != [2]string{"/etc/certs/client.cert", "/etc/certs/client.key"} {
		t.Errorf("files %q %q, want relative ones below %s", specs[0].caFiles, specs[0].clientPairs, dir)
	}
}

// FuzzHostsFile: the hosts.toml parser takes any bytes without panicking,
// and what it accepts is a list of http(s) endpoints with absolute file
// names, the server last unless mirrors_only.
func FuzzHostsFile(f *testing.F) {
	for _, seed := range []string{
		"server = \"https://registry-1.docker.io\"\n[host.\"https://m\"]\n  capabilities = [\"pull\"]\n  ca = \"ca.pem\"\n",
		"mirrors_only = true\n[host.\"http://10.0.0.1:5000/prefix\"]\n  override_path = true\n  dial_timeout = \"1s\"\n  proxy = \"socks5://p:1080\"\n",
		"[host.\"m\"]\n  client = [\"a.pem\", [\"b.crt\", \"b.key\"]]\n  [host.\"m\".header]\n    x = [\"1\", \"2\"]\n",
		"skip_verify = true\nca = [\"/a\", \"b\"]\n[header]\n  x = \"y\"\n",
		"[host.\"https://a\"]\n[host.\"https://b\"]\n[host.\"https://a\".header]\n",
		"server = \"ftp://x\"", "client = 3", "[host]\nx = 1", "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		specs, err := parseHostsFile("registry.example", "/etc/cri-mini/certs.d/registry.example", data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("error without its kind: %v", err)
			}
			return
		}
		if len(specs) == 0 {
			t.Fatal("accepted with no endpoint")
		}
		for _, s := range specs {
			if (s.url.Scheme != "http" && s.url.Scheme != "https") || s.url.Host == "" {
				t.Fatalf("endpoint %s", s.url)
			}
			for _, f := range s.caFiles {
				if !filepath.IsAbs(f) {
					t.Fatalf("relative CA file %q", f)
				}
			}
			for _, p := range s.clientPairs {
				if !filepath.IsAbs(p[0]) || (p[1] != "" && !filepath.IsAbs(p[1])) {
					t.Fatalf("relative client pair %q", p)
				}
			}
		}
	})
}
