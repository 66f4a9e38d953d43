package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/bench"
	"github.com/cri-mini/cri-mini/internal/proc"
)

// cgroupParent holds every pod's cgroup of this run, so that clean-up
// finds them (and only them).
var cgroupParent = fmt.Sprintf("cribench-%d", os.Getpid())

// Figures, in the order of the report.
const (
	figRunPod       = "RunPodSandbox"
	figStopRemove   = "StopPodSandbox+RemovePodSandbox"
	figCreateStart  = "CreateContainer+StartContainer"
	figPodRunning   = "pod to running container"
	figPodLog       = "pod to first log line"
	figExec         = "ExecSync true"
	figBurst        = "burst of pods"
	figPull         = "pull+unpack 3 layers"
	figRSSIdle      = "daemon RSS idle"
	figRSSBurst     = "daemon RSS with burst pods"
	figPerPodRSS    = "per-pod overhead RSS"
	figPerPodPSS    = "per-pod overhead PSS"
	msUnit, mibUnit = "ms", "MiB"
	cpuUnit         = "s/min" // CPU seconds per minute of wall time
	countUnit       = "procs"
)

var podSeq atomic.Int64

// recorder collects the samples by runtime, figure and number of resident
// pods (the cost curve's level; 0 elsewhere).
type recorder struct {
	mu      sync.Mutex
	pods    int // the level add and fail record at
	samples map[sampleKey][]float64
	failed  map[sampleKey]error
}

type sampleKey struct {
	rt, fig string
	pods    int
}

func newRecorder() *recorder {
	return &recorder{samples: map[sampleKey][]float64{}, failed: map[sampleKey]error{}}
}

// at makes add and fail record at pods resident pods.
func (r *recorder) at(pods int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pods = pods
}

func (r *recorder) add(rt, fig string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := sampleKey{rt, fig, r.pods}
	r.samples[k] = append(r.samples[k], v)
}

func (r *recorder) fail(rt, fig string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := sampleKey{rt, fig, r.pods}
	if _, ok := r.failed[k]; !ok {
		if k.pods > 0 {
			fmt.Fprintf(os.Stderr, "cribench: %s: %s with %d pods: %v\n", rt, fig, k.pods, err)
		} else {
			fmt.Fprintf(os.Stderr, "cribench: %s: %s: %v\n", rt, fig, err)
		}
		r.failed[k] = err
	}
}

// collect returns the samples figure by figure, level by level, cri-mini
// before containerd.
func (r *recorder) collect(figs []string, levels []int) []bench.Samples {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []bench.Samples
	for _, fig := range figs {
		for _, pods := range levels {
			for _, rt := range []string{bench.Subject, bench.Reference} {
				if v, ok := r.samples[sampleKey{rt, fig, pods}]; ok {
					out = append(out, bench.Samples{Runtime: rt, Figure: fig, Unit: unitOf(fig), Values: v, Pods: pods})
				}
			}
		}
	}
	return out
}

// unitOf is a figure's unit: CPU seconds per minute, MiB for memory, a
// count of processes, else milliseconds.
func unitOf(fig string) string {
	switch {
	case strings.Contains(fig, "CPU"):
		return cpuUnit
	case strings.Contains(fig, "RSS") || strings.Contains(fig, "PSS"):
		return mibUnit
	case fig == figPodProcs:
		return countUnit
	}
	return msUnit
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// measure runs every figure runs times, alternating which runtime goes
// first from run to run so that machine noise hits both.
func measure(ctx context.Context, runtimes []*runtime, runs int, bursts []int) []bench.Samples {
	rec := newRecorder()
	for i := 0; i < runs && ctx.Err() == nil; i++ {
		fmt.Fprintf(os.Stderr, "cribench: run %d/%d\n", i+1, runs)
		for j := range runtimes {
			rt := runtimes[(i+j)%len(runtimes)]
			podLifecycle(ctx, rt, rec)
			podToLog(ctx, rt, rec)
			pull(ctx, rt, rec)
			for k, n := range bursts {
				burstAndMemory(ctx, rt, rec, n, k == len(bursts)-1)
			}
		}
	}
	figs := []string{figRunPod, figStopRemove, figCreateStart, figPodRunning, figPodLog, figExec}
	for _, n := range bursts {
		figs = append(figs, fmt.Sprintf("%s (%d)", figBurst, n))
	}
	figs = append(figs, figPull, figRSSIdle, figRSSBurst, figPerPodRSS, figPerPodPSS)
	return rec.collect(figs, []int{0})
}

func podConfig(rt *runtime) *runtimeapi.PodSandboxConfig {
	n := podSeq.Add(1)
	uid := fmt.Sprintf("cribench-%d-%d", os.Getpid(), n)
	logDir := filepath.Join(rt.dir, "logs", uid)
	os.MkdirAll(logDir, 0o755)
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("bench-%d", n), Namespace: "cribench", Uid: uid},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    "/" + cgroupParent + "/" + rt.name + "/pod" + strconv.FormatInt(n, 10),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}},
		},
	}
}

// containerConfig is a busybox container named name (its log: name.log in
// the pod's log directory) running args.
func containerConfig(name string, args ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: busyboxImage},
		Command:  args,
		LogPath:  name + ".log",
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
}

// startPod runs a pod with one container, "work"; it returns the pod and
// container ids and the time RunPodSandbox and Create+Start took.
func startPod(ctx context.Context, rt *runtime, args ...string) (pod, ctr string, cfg *runtimeapi.PodSandboxConfig, runp, create time.Duration, err error) {
	cfg = podConfig(rt)
	t0 := time.Now()
	pr, err := rt.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return "", "", cfg, 0, 0, fmt.Errorf("RunPodSandbox: %w", err)
	}
	runp = time.Since(t0)
	t1 := time.Now()
	ctr, err = startContainer(ctx, rt, pr.PodSandboxId, cfg, "work", args...)
	if err != nil {
		return pr.PodSandboxId, ctr, cfg, runp, 0, err
	}
	return pr.PodSandboxId, ctr, cfg, runp, time.Since(t1), nil
}

// startContainer creates and starts a container named name in a running
// pod; it returns the container's id once created, also when the start
// failed.
func startContainer(ctx context.Context, rt *runtime, pod string, cfg *runtimeapi.PodSandboxConfig, name string, args ...string) (string, error) {
	cr, err := rt.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod,
		Config: containerConfig(name, args...), SandboxConfig: cfg})
	if err != nil {
		return "", fmt.Errorf("CreateContainer: %w", err)
	}
	if _, err := rt.rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		return cr.ContainerId, fmt.Errorf("StartContainer: %w", err)
	}
	return cr.ContainerId, nil
}

// removePod removes a pod's container, then stops and removes the pod, and
// says how long the pod's Stop+Remove took.
func removePod(ctx context.Context, rt *runtime, pod, ctr string) (time.Duration, error) {
	if ctr != "" {
		rt.rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctr, Timeout: 0})
		rt.rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctr})
	}
	if pod == "" {
		return 0, nil
	}
	t0 := time.Now()
	if _, err := rt.rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		return 0, fmt.Errorf("StopPodSandbox: %w", err)
	}
	if _, err := rt.rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		return 0, fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return time.Since(t0), nil
}

// podLifecycle: RunPodSandbox, Create+Start, their sum, ExecSync true, and
// Stop+Remove of the pod once its container is gone.
func podLifecycle(ctx context.Context, rt *runtime, rec *recorder) {
	pod, ctr, _, runp, create, err := startPod(ctx, rt, "/bin/sleep", "3600")
	if err != nil {
		rec.fail(rt.name, figPodRunning, err)
		removePod(ctx, rt, pod, ctr)
		return
	}
	rec.add(rt.name, figRunPod, ms(runp))
	rec.add(rt.name, figCreateStart, ms(create))
	rec.add(rt.name, figPodRunning, ms(runp+create))
	t0 := time.Now()
	resp, err := rt.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"/bin/true"}, Timeout: 10})
	switch {
	case err != nil:
		rec.fail(rt.name, figExec, err)
	case resp.ExitCode != 0:
		rec.fail(rt.name, figExec, fmt.Errorf("exit code %d: %s", resp.ExitCode, resp.Stderr))
	default:
		rec.add(rt.name, figExec, ms(time.Since(t0)))
	}
	rt.rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctr, Timeout: 0})
	rt.rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctr})
	d, err := removePod(ctx, rt, pod, "")
	if err != nil {
		rec.fail(rt.name, figStopRemove, err)
		return
	}
	rec.add(rt.name, figStopRemove, ms(d))
}

// podToLog: from RunPodSandbox to the container's first line in its log.
func podToLog(ctx context.Context, rt *runtime, rec *recorder) {
	t0 := time.Now()
	pod, ctr, cfg, _, _, err := startPod(ctx, rt, "/bin/sh", "-c", "echo cribench-ready; exec sleep 3600")
	defer removePod(ctx, rt, pod, ctr)
	if err != nil {
		rec.fail(rt.name, figPodLog, err)
		return
	}
	logPath := filepath.Join(cfg.LogDirectory, "work.log")
	seen := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if b, err := os.ReadFile(logPath); err == nil && strings.Contains(string(b), "cribench-ready") {
			seen = true
			break
		}
	}
	if !seen {
		rec.fail(rt.name, figPodLog, fmt.Errorf("no log line in %s within 10s", logPath))
		return
	}
	rec.add(rt.name, figPodLog, ms(time.Since(t0)))
}

// pull: PullImage of the 3-layer image into a store without it, then
// RemoveImage (untimed) so that the next run is cold again.
func pull(ctx context.Context, rt *runtime, rec *recorder) {
	t0 := time.Now()
	if err := rt.pull(ctx, bigImage); err != nil {
		rec.fail(rt.name, figPull, err)
		return
	}
	rec.add(rt.name, figPull, ms(time.Since(t0)))
	if _, err := rt.is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: bigImage}}); err != nil {
		rec.fail(rt.name, figPull, fmt.Errorf("RemoveImage: %w", err))
	}
}

// burstAndMemory: n pods with one container each started concurrently
// until all run; then removal (untimed). withMemory adds the daemon's RSS
// idle before and with the pods, and the RSS and PSS of the processes the
// pods added per pod.
func burstAndMemory(ctx context.Context, rt *runtime, rec *recorder, n int, withMemory bool) {
	fig := fmt.Sprintf("%s (%d)", figBurst, n)
	if m, err := readRollup(rt.pid()); err == nil && withMemory {
		rec.add(rt.name, figRSSIdle, m.rss)
	}
	before := pidSet()
	type started struct{ pod, ctr string }
	pods := make([]started, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, c, _, _, _, err := startPod(ctx, rt, "/bin/sleep", "3600")
			pods[i], errs[i] = started{p, c}, err
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	failed := false
	for _, err := range errs {
		if err != nil {
			rec.fail(rt.name, fig, err)
			failed = true
			break
		}
	}
	if !failed {
		rec.add(rt.name, fig, ms(elapsed))
	}
	if !failed && withMemory {
		if m, err := readRollup(rt.pid()); err == nil {
			rec.add(rt.name, figRSSBurst, m.rss)
		}
		if rss, pss, err := podOverhead(rt, before); err != nil {
			rec.fail(rt.name, figPerPodRSS, err)
		} else {
			rec.add(rt.name, figPerPodRSS, rss/float64(n))
			rec.add(rt.name, figPerPodPSS, pss/float64(n))
		}
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			removePod(ctx, rt, pods[i].pod, pods[i].ctr)
		}()
	}
	wg.Wait()
}

// memory is a process's resident and proportional set size in MiB.
type memory struct{ rss, pss float64 }

func readRollup(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "Rss:":
			m.rss = kb / 1024
		case "Pss:":
			m.pss = kb / 1024
		}
	}
	return m, sc.Err()
}

type procInfo struct {
	ppid  int
	exe   string
	comm  string
	ticks uint64 // CPU time, user and system, in clock ticks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Kubernetes runs on.
const clockTicks = 100

func processes() map[int]procInfo {
	out := map[int]procInfo{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		out[pid] = procInfo{ppid: st.PPid, exe: exe, comm: st.Comm, ticks: st.CPUTicks}
	}
	return out
}

func pidSet() map[int]bool {
	set := map[int]bool{}
	for pid := range processes() {
		set[pid] = true
	}
	return set
}

// podProcesses are the processes in procs, other than those in before, that
// belong to the runtime's pods: its helper executables (shims, re-exec'd
// supervisors and pause) and their descendants, except the daemon and the
// pods' workload (sleep).
func podProcesses(rt *runtime, procs map[int]procInfo, before map[int]bool) []int {
	helper := map[string]bool{}
	for _, h := range rt.helpers {
		helper[h] = true
	}
	var ours func(pid, depth int) bool
	ours = func(pid, depth int) bool {
		p, ok := procs[pid]
		if !ok || pid <= 1 || depth > 64 {
			return false
		}
		return helper[p.exe] || ours(p.ppid, depth+1)
	}
	var pids []int
	for pid, p := range procs {
		if before[pid] || pid == rt.pid() || p.comm == "sleep" || !ours(pid, 0) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// sumRollup adds up the RSS and PSS of the processes; n counts those still
// there to read.
func sumRollup(pids []int) (total memory, n int) {
	for _, pid := range pids {
		m, err := readRollup(pid)
		if err != nil {
			continue // exited meanwhile
		}
		total.rss += m.rss
		total.pss += m.pss
		n++
	}
	return total, n
}

// podOverhead sums RSS and PSS (MiB) of the processes that appeared since
// before and belong to the runtime's pods (podProcesses).
func podOverhead(rt *runtime, before map[int]bool) (rss, pss float64, err error) {
	total, n := sumRollup(podProcesses(rt, processes(), before))
	if n == 0 {
		return 0, 0, fmt.Errorf("no process of %s found for the pods", rt.name)
	}
	return total.rss, total.pss, nil
}
