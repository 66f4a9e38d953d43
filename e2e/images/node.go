package images

import (
	"fmt"
	"io"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// NodeInputs are the host files of the node e2e suite's images
// (k8s.io/kubernetes test/e2e_node, its PR-gating NodeConformance specs),
// beyond those of critest's.
type NodeInputs struct {
	Inputs
	// Agnhost is test/images/agnhost built from the kubernetes module;
	// AgnhostTLS the directory of that module's localhost.crt and
	// localhost.key (test/images/agnhost/porter), which its image carries at
	// / for the HTTPS servers of the lifecycle hook specs.
	Agnhost, AgnhostTLS string
	// Bash is the busybox stand-ins' /bin/sh: like the ash of upstream's
	// busybox 1.37 it keeps environment names that are not identifiers
	// ("data-1", from a ConfigMap) for the programs it starts; Debian's
	// busybox 1.35 ash drops them. It stays a POSIX shell as sh.
	Bash string
	// Netcat is OpenBSD's nc (Debian's netcat-openbsd): agnhost's netexec
	// runs `nc -u` for UDP, which busybox's nc lacks.
	Netcat string
	// Curl is the host's curl (with its libraries): the suite's networking
	// helpers and exec hooks run curl in agnhost, as upstream's has it.
	Curl string
}

// BuildNode makes the images the PR-gating NodeConformance specs of the
// node e2e suite pull, under their upstream paths (registry.k8s.io/...).
func BuildNode(in NodeInputs) ([]Tagged, error) {
	base, err := baseLayer(in.Inputs)
	if err != nil {
		return nil, err
	}
	node := newLayer()
	node.dynamic("bin/sh", in.Bash)
	node.link("bin/bash", "bin/sh")
	node.copy("bin/nmeter", 0o755, in.Extra)
	if node.err != nil {
		return nil, node.err
	}
	layers := []*layer{base, node}
	b := &builder{}
	busybox := v1.Config{Env: []string{pathEnv}, Cmd: []string{"sh"}}
	b.add(busybox, layers, e2e+"busybox:1.37.0-2", e2e+"busybox:1.36.1-1")
	nonroot := busybox
	nonroot.User = "1234"
	b.add(nonroot, layers, e2e+"nonroot:1.5")
	// The suite's glibc-dns-testing runs `hostname` and `hostname -f`.
	b.add(busybox, layers, e2e+"glibc-dns-testing:2.1.1")
	nginx := v1.Config{
		Env: []string{pathEnv, "WEBSRV_NAME=nginx", "WEBSRV_PORT=80", "WEBSRV_PIDFILE=/var/run/nginx.pid",
			"WEBSRV_TITLE=nginx: master process nginx -g daemon off;"},
		Cmd: []string{"nginx", "-g", "daemon off;"},
	}
	b.add(nginx, append(layers, programLayer(in.WebServer, "usr/sbin/nginx", 0o755)), e2e+"nginx:1.27.0-2")
	nnp := v1.Config{Env: []string{pathEnv}, Entrypoint: []string{"/usr/local/bin/nnp"}, User: "1000"}
	b.add(nnp, append(layers, programLayer(in.NoNewPrivs, "usr/local/bin/nnp", 0o4755)), e2e+"nonewprivs:1.4")

	pause := v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}
	pauseLayers := []*layer{programLayer(in.Pause, "pause", 0o755)}
	pauseImg, err := newImage(pause, pauseLayers...)
	if err != nil {
		return nil, fmt.Errorf("image pause: %w", err)
	}
	agn := agnhostLayer(in)
	// Upstream's agnhost carries registry.k8s.io/pause:3.10.2 as
	// pause:testing for its fake-registry-server, from which the
	// private-registry specs pull: this pause, as that server lays it out.
	if err := fakeRegistry(agn, "pause", "testing", pauseImg); err != nil {
		return nil, err
	}
	// Two versions, two image IDs: a spec updates a pod from one to the
	// other and waits for the new one in the pod's status.
	for _, version := range []string{"2.66.1", "2.55"} {
		cfg := v1.Config{Env: []string{pathEnv}, Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"},
			Labels: map[string]string{"io.cri-mini.e2e.agnhost-version": version}}
		b.add(cfg, append(layers, agn), e2e+"agnhost:"+version)
	}
	b.add(pause, pauseLayers, "pause:3.10.2")
	if b.err != nil {
		return nil, b.err
	}
	return b.out, nil
}

// agnhostLayer holds what upstream's agnhost image adds to its base:
// /agnhost (and /agnhost-2, which entrypoint specs run), its TLS key pair,
// OpenBSD's nc, curl, the upload directory of netexec, and the user and
// group a supplemental groups spec expects in the image.
func agnhostLayer(in NodeInputs) *layer {
	l := newLayer()
	l.copy("agnhost", 0o755, in.Agnhost)
	l.link("agnhost-2", "agnhost")
	l.copy("localhost.crt", 0o644, filepath.Join(in.AgnhostTLS, "localhost.crt"))
	l.copy("localhost.key", 0o600, filepath.Join(in.AgnhostTLS, "localhost.key"))
	l.dynamic("usr/bin/nc", in.Netcat)
	l.dynamic("usr/bin/curl", in.Curl)
	l.dir("uploads", 0o755, 0, 0)
	l.imageUser("user-defined-in-image")
	return l
}

// fakeRegistry adds img to l as repository name, tag tag, of the file
// tree agnhost's fake-registry-server serves (below /var/registry, as
// upstream's prepare_registry.sh writes it): manifests/TAG holds the
// manifest's digest, manifests/sha256/XX/HASH/data the manifest,
// blobs/sha256/XX/HASH/data the config and the compressed layers. The
// server runs as a user of its own: everything is world-readable.
func fakeRegistry(l *layer, name, tag string, img v1.Image) error {
	dir := "var/registry/" + name + "/"
	path := func(kind string, d v1.Hash) string {
		return fmt.Sprintf("%s%s/%s/%s/%s/data", dir, kind, d.Algorithm, d.Hex[:2], d.Hex)
	}
	add := func(name string, data []byte) {
		l.parents(name)
		l.file(name, 0o644, data)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	add(dir+"manifests/"+tag, []byte(digest.String()+"\n"))
	add(path("manifests", digest), manifest)
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cd, err := img.ConfigName()
	if err != nil {
		return err
	}
	add(path("blobs", cd), config)
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, ly := range layers {
		d, err := ly.Digest()
		if err != nil {
			return err
		}
		rc, err := ly.Compressed()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		add(path("blobs", d), data)
	}
	return l.err
}
