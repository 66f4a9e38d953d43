// Package images builds offline stand-ins for the container images that
// critest (sigs.k8s.io/cri-tools v1.37.0) pulls, so that the CRI validation
// suite runs against cri-mini with no public registry. The images keep the
// upstream repository paths and tags; a loopback registry serves them and
// cri-mini mirrors registry.k8s.io, gcr.io and k8s.gcr.io to it.
//
// Everything is built with go-containerregistry from files on this machine:
// Debian's busybox-static for the applets, Debian's dynamic busybox for
// /bin/sh (see Inputs.Shell), and small static Go programs from e2e/cmd for
// the web server, setuid, pgrep/ipcs and pause parts. Builds are
// deterministic for unchanged inputs (fixed times, fixed order).
package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Inputs are the host files the images are made of.
type Inputs struct {
	// Busybox is a static busybox (Debian's busybox-static, /bin/busybox);
	// every applet of it is a hard link in the image's /bin.
	Busybox string
	// Shell is a busybox built without FEATURE_SH_STANDALONE (Debian's
	// dynamic busybox package, see DebianShell); it becomes /bin/sh and
	// /bin/ash together with the libraries it needs. The static busybox's
	// shell runs applets in-process and never execs /bin/ls, which critest's
	// MaskedPaths spec relies on.
	Shell string
	Programs
}

// Tagged is an image and the repository:tag it is served under, relative to
// the registry host ("e2e-test-images/busybox:1.29-2").
type Tagged struct {
	Ref   string
	Image v1.Image
}

const (
	pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	e2e     = "e2e-test-images/"
	staging = "k8s-staging-cri-tools/"
)

// created is the creation time of every image and file: a fixed one keeps
// digests stable from build to build.
var created = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Build makes every image critest needs, in a fixed order. Several Tagged
// share an image where critest wants one image under several names.
func Build(in Inputs) ([]Tagged, error) {
	base, err := baseLayer(in)
	if err != nil {
		return nil, err
	}
	b := &builder{}
	busybox := v1.Config{Env: []string{pathEnv}, Cmd: []string{"sh"}}
	withUser := func(user string) v1.Config { c := busybox; c.User = user; return c }
	nginx := func(port string) v1.Config {
		return v1.Config{
			Env: []string{pathEnv, "WEBSRV_NAME=nginx", "WEBSRV_PORT=" + port, "WEBSRV_PIDFILE=/var/run/nginx.pid",
				"WEBSRV_TITLE=nginx: master process nginx -g daemon off;"},
			Cmd: []string{"nginx", "-g", "daemon off;"},
		}
	}
	nginxLayer := programLayer(in.WebServer, "usr/sbin/nginx", 0o755)

	b.add(busybox, []*layer{base}, e2e+"busybox:1.29-2")
	b.add(nginx("80"), []*layer{base, nginxLayer}, e2e+"nginx:1.14-2")
	b.add(nginx("12003"), []*layer{base, nginxLayer}, staging+"hostnet-nginx-"+runtime.GOARCH+":latest")
	httpd := v1.Config{
		Env: []string{"PATH=/usr/local/apache2/bin:" + strings.TrimPrefix(pathEnv, "PATH="), "WEBSRV_NAME=httpd", "WEBSRV_PORT=80"},
		Cmd: []string{"httpd", "-DFOREGROUND"},
	}
	b.add(httpd, []*layer{base, programLayer(in.WebServer, "usr/local/apache2/bin/httpd", 0o755)}, e2e+"httpd:2.4.39-4")
	nnp := v1.Config{Env: []string{pathEnv}, Entrypoint: []string{"/usr/local/bin/nnp"}, User: "1000"}
	b.add(nnp, []*layer{base, programLayer(in.NoNewPrivs, "usr/local/bin/nnp", 0o4755)}, e2e+"nonewprivs:1.3")

	b.add(withUser("1002"), []*layer{base}, staging+"test-image-user-uid:latest")
	b.add(withUser("www-data"), []*layer{base}, staging+"test-image-user-username:latest")
	b.add(withUser("1003:1004"), []*layer{base}, staging+"test-image-user-uid-group:latest")
	b.add(withUser("www-data:1004"), []*layer{base}, staging+"test-image-user-username-group:latest")
	b.add(withUser("1000"), []*layer{base, predefinedGroupLayer()}, staging+"test-image-predefined-group:latest")

	// Images that differ only by a marker file, as upstream's image-test.
	for _, m := range []struct{ file, ref string }{
		{"test-image-latest", "test-image-latest:latest"},
		{"test", "test-image-tag:test"},
		{"all", "test-image-tag:all"},
		// critest asks for test-image-digest by an upstream manifest digest
		// that cannot be reproduced; served by tag only (see skip.txt).
		{"digest", "test-image-digest:latest"},
		{"1", "test-image-1:latest"},
		{"2", "test-image-2:latest"},
		{"3", "test-image-3:latest"},
	} {
		b.add(busybox, []*layer{base, markerLayer(m.file)}, staging+m.ref)
	}
	b.add(busybox, []*layer{base, markerLayer("tags")}, staging+"test-image-tags:1", staging+"test-image-tags:2", staging+"test-image-tags:3")

	// registry.k8s.io/pause:3.9 and k8s.gcr.io/pause:3.9 are one repository
	// behind the mirrors. 3.10 differs by its label only, so that removing
	// 3.9 by ID in critest never touches a runtime's sandbox image.
	pauseLayer := programLayer(in.Pause, "pause", 0o755)
	for _, version := range []string{"3.9", "3.10"} {
		pause := v1.Config{
			Entrypoint: []string{"/pause"},
			User:       "65535:65535",
			Labels:     map[string]string{"io.cri-mini.e2e.pause-version": version},
		}
		b.add(pause, []*layer{pauseLayer}, "pause:"+version)
	}
	if b.err != nil {
		return nil, b.err
	}
	return b.out, nil
}

// builder collects images and the first error.
type builder struct {
	out []Tagged
	err error
}

func (b *builder) add(cfg v1.Config, layers []*layer, refs ...string) {
	if b.err != nil {
		return
	}
	img, err := newImage(cfg, layers...)
	if err != nil {
		b.err = fmt.Errorf("image %s: %w", refs[0], err)
		return
	}
	for _, r := range refs {
		b.out = append(b.out, Tagged{Ref: r, Image: img})
	}
}

// newImage stacks the layers and sets the configuration.
func newImage(cfg v1.Config, layers ...*layer) (v1.Image, error) {
	img := empty.Image
	for _, l := range layers {
		built, err := l.v1()
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, built); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// Push writes the images to the registry at host ("127.0.0.1:5000"), over
// plain HTTP when host is a loopback address.
func Push(ctx context.Context, host string, images []Tagged) error {
	for _, t := range images {
		tag, err := name.NewTag(host+"/"+t.Ref, name.Insecure)
		if err != nil {
			return fmt.Errorf("image reference %s: %w", t.Ref, err)
		}
		if err := remote.Write(tag, t.Image, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("push %s: %w", tag, err)
		}
	}
	return nil
}

// applets lists the applets of a busybox binary.
func applets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	names := strings.Fields(string(out))
	if len(names) == 0 {
		return nil, fmt.Errorf("%s --list: no applets", busybox)
	}
	slices.Sort(names)
	return names, nil
}

func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image input: %w", err)
	}
	return data, nil
}
