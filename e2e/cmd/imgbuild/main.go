// Command imgbuild builds the offline critest images (package e2e/images)
// and pushes them to a registry, or serves them itself:
//
//	imgbuild -registry 127.0.0.1:5000        push to a running registry
//	imgbuild -serve 127.0.0.1:0 -addr-file F  start an in-memory registry,
//	                                          push, write its host:port to F,
//	                                          serve until SIGTERM/SIGINT
//
// With -agnhost (a test/images/agnhost binary) it builds the node e2e
// suite's images instead (images.BuildNode).
//
// Run it from the module root (or give -module): the helper programs are
// built from e2e/cmd. Where nothing can be built (e2e/v2vm's guest), -load
// takes the images from a tarball -save wrote instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cri-mini/cri-mini/e2e/images"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "imgbuild: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	cacheDefault := filepath.Join(os.TempDir(), "cri-mini-e2e")
	if d, err := os.UserCacheDir(); err == nil {
		cacheDefault = filepath.Join(d, "cri-mini-e2e")
	}
	var (
		host     = flag.String("registry", "", "push to the registry at HOST:PORT (plain HTTP on loopback)")
		serve    = flag.String("serve", "", "serve an in-memory registry on ADDR and push to it")
		addrFile = flag.String("addr-file", "", "with -serve: write the registry's HOST:PORT here once the images are pushed")
		busybox  = flag.String("busybox", "/bin/busybox", "static busybox (Debian busybox-static)")
		shell    = flag.String("shell", "", "non-standalone busybox for /bin/sh (default: Debian's busybox package, fetched with apt-get)")
		cache    = flag.String("cache", cacheDefault, "cache directory for the Debian busybox package")
		module   = flag.String("module", ".", "cri-mini module root")
		save     = flag.String("save", "", "write the images to FILE as a docker save tarball, named registry.k8s.io/<path> (for cri-mini image import)")
		only     = flag.String("only", "", "with -save: only the images whose path matches this regular expression")
		agnhost  = flag.String("agnhost", "", "build the node e2e suite's images, agnhost from this binary (e2e/kubelet/build.sh agnhost)")
		tls      = flag.String("agnhost-tls", "", "with -agnhost: the directory of agnhost's localhost.crt and localhost.key (the kubernetes module's test/images/agnhost/porter)")
		bash     = flag.String("bash", "/bin/bash", "with -agnhost: the shell of the busybox stand-ins")
		curl     = flag.String("curl", "/usr/bin/curl", "with -agnhost: the curl of the agnhost image (its libraries come along)")
		load     = flag.String("load", "", "push or serve the images of a tarball -save wrote instead of building them")
	)
	flag.Parse()
	if n := btoi(*host != "") + btoi(*serve != "") + btoi(*save != ""); n != 1 {
		return errors.New("give exactly one of -registry, -serve or -save")
	}
	keep, err := regexp.Compile(*only)
	if err != nil {
		return fmt.Errorf("-only: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var built []images.Tagged
	if *load != "" {
		built, err = loadTarball(*load)
	} else {
		var node *images.NodeInputs
		if *agnhost != "" {
			node = &images.NodeInputs{Agnhost: *agnhost, AgnhostTLS: *tls, Bash: *bash, Curl: *curl}
		}
		built, err = build(ctx, images.Inputs{Busybox: *busybox, Shell: *shell}, node, *cache, *module)
	}
	if err != nil {
		return err
	}
	if *save != "" {
		return saveTarball(*save, built, keep)
	}

	if *host != "" {
		return push(ctx, *host, built)
	}
	ln, err := net.Listen("tcp", *serve)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	if err := push(ctx, addr, built); err != nil {
		return err
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(addr+"\n"), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("imgbuild: serving %d images on %s\n", len(built), addr)
	<-ctx.Done()
	return nil
}

// build makes the images from in (with node, the node e2e suite's),
// fetching the shell and netcat into cache and building the helper programs
// of the module at module when in lacks them.
func build(ctx context.Context, in images.Inputs, node *images.NodeInputs, cache, module string) ([]images.Tagged, error) {
	if in.Shell == "" {
		var err error
		if in.Shell, err = images.DebianShell(ctx, cache); err != nil {
			return nil, err
		}
	}
	bin, err := os.MkdirTemp("", "imgbuild-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bin)
	if in.Programs, err = images.BuildPrograms(ctx, module, bin); err != nil {
		return nil, err
	}
	if node == nil {
		return images.Build(in)
	}
	node.Inputs = in
	if node.Netcat, err = images.DebianBinary(ctx, cache, "netcat-openbsd", "bin/nc.openbsd"); err != nil {
		return nil, err
	}
	return images.BuildNode(*node)
}

// loadTarball reads back the images saveTarball wrote.
func loadTarball(file string) ([]images.Tagged, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(file) }
	manifest, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	var out []images.Tagged
	for _, d := range manifest {
		for _, ref := range d.RepoTags {
			tag, err := name.NewTag(ref)
			if err != nil {
				return nil, fmt.Errorf("load %s: %w", file, err)
			}
			img, err := tarball.Image(opener, &tag)
			if err != nil {
				return nil, fmt.Errorf("load %s: %s: %w", file, ref, err)
			}
			out = append(out, images.Tagged{Ref: strings.TrimPrefix(ref, savedRegistry+"/"), Image: img})
		}
	}
	return out, nil
}

func push(ctx context.Context, host string, built []images.Tagged) error {
	if err := images.Push(ctx, host, built); err != nil {
		return err
	}
	for _, t := range built {
		d, err := t.Image.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("%s/%s %s\n", host, t.Ref, d)
	}
	return nil
}

// savedRegistry names the images in a saved tarball: critest and the demo
// use registry.k8s.io names.
const savedRegistry = "registry.k8s.io"

// saveTarball writes the images whose path keep matches as one docker save
// tarball, under the registry.k8s.io names critest and the demo use.
func saveTarball(file string, built []images.Tagged, keep *regexp.Regexp) error {
	refs := map[name.Reference]v1.Image{}
	for _, t := range built {
		if !keep.MatchString(t.Ref) {
			continue
		}
		tag, err := name.NewTag(savedRegistry + "/" + t.Ref)
		if err != nil {
			return fmt.Errorf("image reference %s: %w", t.Ref, err)
		}
		refs[tag] = t.Image
	}
	if len(refs) == 0 {
		return fmt.Errorf("no image path matches %q", keep)
	}
	return tarball.MultiRefWriteToFile(file, refs)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
