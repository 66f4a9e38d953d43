// Command cribench measures CRI runtimes side by side on one machine: it
// serves the benchmark images on a loopback registry, starts each runtime
// with throw-away state (containerd with runc from bench/setup-containerd.sh,
// cri-mini from its binary), drives them through the same generated CRI
// client, interleaving the runtimes run by run, prints the table and writes
// JSON and SVG. Then the cost curve to a full node (-curve): the same CRI
// calls, the daemons' RSS and idle CPU and the memory of the processes they
// keep per pod, with 0, 30 and 110 pods resident; its table follows and it
// goes into the JSON. It removes its pods, stops the daemons, unmounts what
// is left under its work dir and deletes its bridges and cgroups.
//
//	cribench -containerd-bin ~/.cache/cri-mini-bench/bin [-cri-mini bin/cri-mini] -runs 20 -out bench-out \
//		[-curve 0,30,110|none] [-curve-runs 20] [-idle 20s]
package main

import (
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
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

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
		burst    = flag.String("burst", "10,30", "pods in each burst, comma-separated (the memory figures are taken at the largest)")
		out      = flag.String("out", "bench-out", "directory for results.json and results.svg")
		module   = flag.String("module", ".", "cri-mini module root (the image helper programs are built from it)")
		bigBytes = flag.Int64("big-layer-bytes", 33<<20, "size of each of the 3 layers of the pull image")
		curve    = flag.String("curve", "0,30,110", "cost curve: the numbers of resident pods to measure at (none: no curve)")
		cRuns    = flag.Int("curve-runs", 20, "runs per figure and level of the cost curve")
		idle     = flag.Duration("idle", 20*time.Second, "cost curve: the idle window the CPU time is taken over")
	)
	flag.Parse()
	if *ctrdBin == "" && *criMini == "" {
		return fmt.Errorf("give -containerd-bin and/or -cri-mini")
	}
	levels, err := parsePodCounts("curve", *curve, 0)
	if err != nil {
		return err
	}
	bursts, err := parsePodCounts("burst", *burst, 1)
	if err != nil {
		return err
	}
	if *idle <= 0 {
		return fmt.Errorf("-idle %v: must be positive", *idle)
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

	res := bench.Results{Figures: bench.Summarize(measure(ctx, runtimes, *runs, bursts))}
	if len(res.Figures) > 0 {
		if err := bench.WriteTable(os.Stdout, res.Figures); err != nil {
			return err
		}
	}
	if len(levels) > 0 && ctx.Err() == nil {
		res.Curve = bench.SummarizeCurve(costCurve(ctx, runtimes, levels, *cRuns, *idle))
		fmt.Printf("\nCost curve to a full node: pods resident (each with 1 or 2 sleeping containers, both runtimes at once); "+
			"calls and daemon RSS: medians of %d runs, each starting one more pod; idle CPU: CPU seconds per minute over %v "+
			"with nothing happening; pod processes (shims or supervisors, pause): all pods together.\n", *cRuns, *idle)
		if err := bench.WriteCurveTable(os.Stdout, res.Curve); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(*out, "results.json"), func(w io.Writer) error { return bench.WriteJSON(w, res) }); err != nil {
		return err
	}
	return writeFile(filepath.Join(*out, "results.svg"), func(w io.Writer) error { return bench.WriteSVG(w, res.Figures) })
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
		if t.Ref == "pause:3.10" || t.Ref == "e2e-test-images/busybox:1.29-2" {
			keep = append(keep, t)
		}
	}
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

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
