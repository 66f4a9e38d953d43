// Command cribench measures CRI runtimes side by side on one machine: it
// serves the benchmark images on a loopback registry, starts each runtime
// with throw-away state (containerd with runc from bench/setup-containerd.sh,
// cri-mini from its binary), drives them through the same generated CRI
// client, interleaving the runtimes run by run, prints the table and writes
// JSON and SVG. It removes its pods, stops the daemons, unmounts what is
// left under its work dir and deletes its bridges and cgroups.
//
//	cribench -containerd-bin ~/.cache/cri-mini-bench/bin [-cri-mini bin/cri-mini] -runs 20 -out bench-out
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cri-mini/cri-mini/bench"
	"github.com/cri-mini/cri-mini/e2e/images"
)

// Image references as the runtimes see them: registry.k8s.io is mirrored
// to the loopback registry.
const (
	mirrored     = "registry.k8s.io"
	busyboxImage = mirrored + "/e2e-test-images/busybox:1.29-2"
	pauseImage   = mirrored + "/pause:3.10"
	bigImage     = mirrored + "/cribench/big:1"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("cribench: %v", err)
	}
}

func run() error {
	var (
		ctrdBin  = flag.String("containerd-bin", "", "directory with containerd, containerd-shim-runc-v2 and runc (bench/setup-containerd.sh)")
		criMini  = flag.String("cri-mini", "", "cri-mini binary (empty: containerd only)")
		runs     = flag.Int("runs", 20, "runs per figure")
		burst    = flag.Int("burst", 30, "pods in the burst")
		out      = flag.String("out", "bench-out", "directory for results.json and results.svg")
		module   = flag.String("module", ".", "cri-mini module root (the image helper programs are built from it)")
		bigBytes = flag.Int64("big-layer-bytes", 33<<20, "size of each of the 3 layers of the pull image")
	)
	flag.Parse()
	if *ctrdBin == "" && *criMini == "" {
		return fmt.Errorf("give -containerd-bin and/or -cri-mini")
	}
	// Ctrl-C ends the runs early; clean-up still happens.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "cribench-")
	if err != nil {
		return err
	}
	// The runtimes' stores live below: a 0700 parent keeps containers
	// (which may run as other users) from reaching their own root files.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	var runtimes []*runtime
	defer func() {
		for _, rt := range runtimes {
			rt.stop()
		}
		cleanupWork(work)
	}()

	registryAddr, err := serveImages(ctx, work, *module, *bigBytes)
	if err != nil {
		return err
	}
	if *ctrdBin != "" {
		rt, err := startContainerd(ctx, work, *ctrdBin, registryAddr)
		if err != nil {
			return fmt.Errorf("start containerd: %w", err)
		}
		runtimes = append(runtimes, rt)
	}
	if *criMini != "" {
		rt, err := startCriMini(ctx, work, *criMini, registryAddr)
		if err != nil {
			return fmt.Errorf("start cri-mini: %w", err)
		}
		runtimes = append(runtimes, rt)
	}
	for _, rt := range runtimes {
		for _, img := range []string{busyboxImage, pauseImage} {
			if err := rt.pull(ctx, img); err != nil {
				return fmt.Errorf("%s: warm-up pull %s: %w", rt.name, img, err)
			}
		}
	}

	samples := measure(ctx, runtimes, *runs, *burst)
	rows := bench.Summarize(samples)
	if err := bench.WriteTable(os.Stdout, rows); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(*out, "results.json"), func(w io.Writer) error { return bench.WriteJSON(w, rows) }); err != nil {
		return err
	}
	return writeFile(filepath.Join(*out, "results.svg"), func(w io.Writer) error { return bench.WriteSVG(w, rows) })
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// serveImages starts an in-memory registry on loopback with the offline
// busybox and pause images (package e2e/images) and a 3-layer random image
// for the pull figure; it returns host:port.
func serveImages(ctx context.Context, work, module string, layerBytes int64) (string, error) {
	cache := filepath.Join(os.TempDir(), "cri-mini-e2e")
	if d, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(d, "cri-mini-e2e")
	}
	shell, err := images.DebianShell(ctx, cache)
	if err != nil {
		return "", err
	}
	progDir := filepath.Join(work, "programs")
	progs, err := images.BuildPrograms(ctx, module, progDir)
	if err != nil {
		return "", err
	}
	built, err := images.Build(images.Inputs{Busybox: "/bin/busybox", Shell: shell, Programs: progs})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(ln)
	addr := ln.Addr().String()
	var keep []images.Tagged
	for _, t := range built {
		if t.Ref == "pause:3.10" {
			keep = append(keep, t)
		}
	}
	// The e2e busybox's hard-link tar entries carry mode 0, which
	// containerd applies to the shared inode (every applet becomes
	// unexecutable there): the bench uses a plain busybox of its own.
	bb, err := plainBusybox()
	if err != nil {
		return "", err
	}
	keep = append(keep, images.Tagged{Ref: "e2e-test-images/busybox:1.29-2", Image: bb})
	if err := images.Push(ctx, addr, keep); err != nil {
		return "", err
	}
	big, err := random.Image(layerBytes, 3)
	if err != nil {
		return "", err
	}
	ref, err := name.ParseReference(addr+"/cribench/big:1", name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, big, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push pull image: %w", err)
	}
	return addr, nil
}

// plainBusybox is Debian's static busybox at /bin/busybox with the
// applets the bench runs as symlinks to it.
func plainBusybox() (v1.Image, error) {
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, dir := range []string{"bin/", "tmp/", "proc/", "sys/", "dev/", "etc/"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime})
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: mtime})
	tw.Write(bin)
	for _, applet := range []string{"sh", "sleep", "true", "echo", "cat"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: mtime})
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	return mutate.Config(img, v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}})
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
