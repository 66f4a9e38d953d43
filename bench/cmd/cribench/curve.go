package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/bench"
)

// The cost curve to a full node: the figures below with a number of pods
// resident (the levels, up to kubelet's default of 110 max pods), each pod
// with one or two sleeping containers. Both runtimes hold their pods at the
// same time, so that the machine's noise hits both; a level adds the pods
// its predecessor lacks.
const (
	figListContainers  = "ListContainers"
	figListPodStats    = "ListPodSandboxStats"
	figContainerStatus = "ContainerStatus"
	figDaemonRSS       = "daemon RSS"
	figDaemonCPU       = "daemon idle CPU"
	// The pod processes: the runtime's processes for the pods (its shims
	// or supervisors and the pause processes, not the workload), all pods
	// together.
	figPodProcs    = "pod processes"
	figPodProcsRSS = "pod processes RSS"
	figPodProcsPSS = "pod processes PSS"
	figPodProcsCPU = "pod processes idle CPU"
	figResident    = "resident pods"

	// fillConcurrency bounds the pods started at once while filling.
	fillConcurrency = 8
)

var curveFigures = []string{figRunPod, figCreateStart, figListContainers, figListPodStats, figContainerStatus,
	figDaemonRSS, figDaemonCPU, figPodProcs, figPodProcsRSS, figPodProcsPSS, figPodProcsCPU}

// parsePodCounts reads a flag of pod counts (-curve: numbers of resident
// pods, from 0; -burst: sizes of bursts, from 1) separated by commas,
// returned in ascending order without repeats; "" or "none" is none.
func parsePodCounts(flag, s string, least int) ([]int, error) {
	if s = strings.TrimSpace(s); s == "" || s == "none" {
		return nil, nil
	}
	var levels []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < least {
			return nil, fmt.Errorf("-%s %q: %q is not a number of pods from %d", flag, s, f, least)
		}
		levels = append(levels, n)
	}
	slices.Sort(levels)
	return slices.Compact(levels), nil
}

// resident is what a runtime holds for the curve.
type resident struct {
	pods       []string
	containers int
	broken     bool // a fill failed: the runtime is left out of later levels
}

// costCurve fills the runtimes up to each level in turn and measures there:
// first the idle window (CPU and memory with nothing happening), then runs
// probes, alternating which runtime goes first. It removes its pods before
// it returns, also when ctx is cancelled.
func costCurve(ctx context.Context, runtimes []*runtime, levels []int, runs int, idle time.Duration) []bench.Samples {
	rec := newRecorder()
	held := map[*runtime]*resident{}
	for _, rt := range runtimes {
		held[rt] = &resident{}
	}
	defer func() {
		// ctx may be cancelled: the pods go all the same.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		for _, rt := range runtimes {
			drain(dctx, rt, held[rt].pods)
		}
	}()
	for _, level := range levels {
		if ctx.Err() != nil {
			break
		}
		rec.at(level)
		var live []*runtime
		for _, rt := range runtimes {
			h := held[rt]
			if h.broken {
				continue
			}
			fmt.Fprintf(os.Stderr, "cribench: curve: %s to %d pods\n", rt.name, level)
			if err := fill(ctx, rt, h, level); err != nil {
				rec.fail(rt.name, figResident, err)
				h.broken = true
				continue
			}
			live = append(live, rt)
		}
		if len(live) == 0 {
			break
		}
		fmt.Fprintf(os.Stderr, "cribench: curve: %d pods: idle window, then %d runs\n", level, runs)
		idleWindow(ctx, live, rec, idle)
		for i := 0; i < runs && ctx.Err() == nil; i++ {
			for j := range live {
				rt := live[(i+j)%len(live)]
				probe(ctx, rt, rec, len(held[rt].pods)+1, held[rt].containers+1)
			}
		}
	}
	return rec.collect(curveFigures, levels)
}

// fill starts pods until h holds level of them, fillConcurrency at a time;
// every second pod gets a second container.
func fill(ctx context.Context, rt *runtime, h *resident, level int) error {
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed []error
	)
	sem := make(chan struct{}, fillConcurrency)
	for k := len(h.pods); k < level; k++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			pod, ctr, cfg, _, _, err := startPod(ctx, rt, "/bin/sleep", "3600")
			n := 0
			if ctr != "" {
				n++
			}
			if err == nil && k%2 == 1 {
				var side string
				side, err = startContainer(ctx, rt, pod, cfg, "side", "/bin/sleep", "3600")
				if side != "" {
					n++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if pod != "" {
				h.pods = append(h.pods, pod)
				h.containers += n
			}
			if err != nil {
				failed = append(failed, err)
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		return fmt.Errorf("%d pods failed to start, the first: %w", len(failed), failed[0])
	}
	return nil
}

// drain stops and removes pods, fillConcurrency at a time.
func drain(ctx context.Context, rt *runtime, pods []string) {
	sem := make(chan struct{}, fillConcurrency)
	var wg sync.WaitGroup
	for _, pod := range pods {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := removePod(ctx, rt, pod, ""); err != nil {
				fmt.Fprintf(os.Stderr, "cribench: %s: remove pod %s: %v\n", rt.name, pod, err)
			}
		}()
	}
	wg.Wait()
}

// idleWindow waits for the runtimes to settle from filling, then measures
// over idle the CPU time their daemons and pod processes take with nothing
// happening (in CPU seconds per minute), and at its end the pod processes'
// number, RSS and PSS.
func idleWindow(ctx context.Context, runtimes []*runtime, rec *recorder, idle time.Duration) {
	sleep(ctx, min(idle/4, 5*time.Second))
	type snapshot struct {
		daemon uint64
		seen   bool // the daemon was there to read
		pods   map[int]uint64
	}
	take := func() (map[*runtime]snapshot, map[int]procInfo) {
		procs := processes()
		snaps := map[*runtime]snapshot{}
		for _, rt := range runtimes {
			d, seen := procs[rt.pid()]
			s := snapshot{daemon: d.ticks, seen: seen, pods: map[int]uint64{}}
			for _, pid := range podProcesses(rt, procs, nil) {
				s.pods[pid] = procs[pid].ticks
			}
			snaps[rt] = s
		}
		return snaps, procs
	}
	t0 := time.Now()
	before, _ := take()
	if !sleep(ctx, idle) {
		return
	}
	after, procs := take()
	perMinute := func(ticks uint64) float64 {
		return float64(ticks) / clockTicks / time.Since(t0).Minutes()
	}
	for _, rt := range runtimes {
		b, a := before[rt], after[rt]
		if b.seen && a.seen {
			rec.add(rt.name, figDaemonCPU, perMinute(a.daemon-b.daemon))
		} else {
			rec.fail(rt.name, figDaemonCPU, fmt.Errorf("no /proc/%d/stat to read", rt.pid()))
		}
		var pods uint64
		for pid, t := range a.pods {
			if was, ok := b.pods[pid]; ok {
				pods += t - was
			}
		}
		rec.add(rt.name, figPodProcsCPU, perMinute(pods))
		total, n := sumRollup(podProcesses(rt, procs, nil))
		rec.add(rt.name, figPodProcs, float64(n))
		rec.add(rt.name, figPodProcsRSS, total.rss)
		rec.add(rt.name, figPodProcsPSS, total.pss)
	}
}

// sleep waits d or until ctx is done; it says whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// probe starts one more pod (RunPodSandbox, Create+Start of its container),
// asks for that container's status, lists the containers and the pods'
// stats, reads the daemon's RSS and removes the pod (untimed). pods and
// containers are how many the lists must hold at least.
func probe(ctx context.Context, rt *runtime, rec *recorder, pods, containers int) {
	pod, ctr, _, runp, create, err := startPod(ctx, rt, "/bin/sleep", "3600")
	defer removePod(ctx, rt, pod, ctr)
	if err != nil {
		rec.fail(rt.name, figRunPod, err)
		return
	}
	rec.add(rt.name, figRunPod, ms(runp))
	rec.add(rt.name, figCreateStart, ms(create))
	for _, c := range []struct {
		fig  string
		call func() (int, error) // the number of items, where it lists
		want int
	}{
		{figContainerStatus, func() (int, error) {
			_, err := rt.rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
			return 0, err
		}, 0},
		{figListContainers, func() (int, error) {
			r, err := rt.rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
			return len(r.GetContainers()), err
		}, containers},
		{figListPodStats, func() (int, error) {
			r, err := rt.rs.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
			return len(r.GetStats()), err
		}, pods},
	} {
		t0 := time.Now()
		n, err := c.call()
		d := time.Since(t0)
		if err == nil && n < c.want {
			err = fmt.Errorf("%d items, want %d at least", n, c.want)
		}
		if err != nil {
			rec.fail(rt.name, c.fig, err)
			continue
		}
		rec.add(rt.name, c.fig, ms(d))
	}
	if m, err := readRollup(rt.pid()); err == nil {
		rec.add(rt.name, figDaemonRSS, m.rss)
	}
}
