package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerEvents follows a container that exits after a second
// through GetContainerEvents (the Go client, as kubelet's evented PLEG)
// and `crictl events` at once: created, started, stopped, deleted, in
// order, each with the pod's status and its containers' statuses as they
// were then. Both streams end cleanly when their clients go away.
func TestContainerEvents(t *testing.T) {
	pullTestImage(t)
	podCfg := podConfig("events")
	podID := runPod(t, podCfg)
	waitEventStreams(t, 0)

	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := suite.rt.GetContainerEvents(sctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // sent once subscribed
		t.Fatal(err)
	}
	crictlLines := crictlEvents(t, `{{.containerEventType}} {{.containerId}} {{.podSandboxStatus.metadata.name}} {{len .containersStatuses}}`)
	waitEventStreams(t, 2)

	// No client waits for its events forever.
	timer := time.AfterFunc(time.Minute, cancel)
	defer timer.Stop()
	ctrID := runContainer(t, podID, podCfg, containerConfig("events", "/bin/sh", "-c", "sleep 1"))

	want := []struct {
		typ   runtimeapi.ContainerEventType
		state runtimeapi.ContainerState // of the container in the event; -1: not listed (deleted)
	}{
		{runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, runtimeapi.ContainerState_CONTAINER_CREATED},
		{runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, runtimeapi.ContainerState_CONTAINER_RUNNING},
		{runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerState_CONTAINER_EXITED},
		{runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, -1},
	}
	var last int64
	for _, w := range want {
		if w.typ == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
			// Removed only once the exit watch has sent STOPPED.
			if _, err := suite.rt.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: ctrID}); err != nil {
				t.Fatal(err)
			}
		}
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for %v: %v", w.typ, err)
		}
		if ev.ContainerEventType != w.typ || ev.ContainerId != ctrID {
			t.Fatalf("event %v of %s, want %v of %s", ev.ContainerEventType, ev.ContainerId, w.typ, ctrID)
		}
		if ev.CreatedAt <= last || time.Since(time.Unix(0, ev.CreatedAt)) > time.Minute {
			t.Errorf("%v: created_at %d after %d", w.typ, ev.CreatedAt, last)
		}
		last = ev.CreatedAt
		checkEventStatuses(t, ev, podID, w.state)
		if st := eventStatus(ev); w.typ == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT && (st.GetExitCode() != 0 || st.GetReason() != "Completed") {
			t.Errorf("exit in the status: %v", st)
		}
	}

	for i, w := range want {
		n := "1"
		if i == len(want)-1 {
			n = "0"
		}
		wantLine := w.typ.String() + " " + ctrID + " events " + n
		select {
		case line := <-crictlLines:
			if line != wantLine {
				t.Errorf("crictl events printed %q, want %q", line, wantLine)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("crictl events printed nothing within 20s, want %q", wantLine)
		}
	}

	cancel()
	if _, err := stream.Recv(); err == nil {
		t.Error("the stream went on after its client cancelled")
	}
	waitEventStreams(t, 1) // crictl's
}

// checkEventStatuses checks the pod status in ev and the status of the
// event's container in it (state -1: not listed, it was deleted).
func checkEventStatuses(t *testing.T, ev *runtimeapi.ContainerEventResponse, podID string, state runtimeapi.ContainerState) {
	t.Helper()
	typ := ev.ContainerEventType
	pod := ev.PodSandboxStatus
	if pod.GetId() != podID || pod.GetMetadata().GetUid() == "" || pod.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY || pod.GetNetwork().GetIp() == "" {
		t.Errorf("%v: pod status %v", typ, pod)
	}
	mine := eventStatus(ev)
	switch {
	case state < 0 && mine != nil:
		t.Errorf("%v: the deleted container is still listed: %v", typ, mine)
	case state >= 0 && (mine == nil || mine.State != state || mine.Metadata.GetName() == ""):
		t.Errorf("%v: container status %v, want state %v", typ, mine, state)
	case typ == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT && (mine.FinishedAt == 0 || mine.Reason == ""):
		t.Errorf("%v: no exit in the status: %v", typ, mine)
	}
}

// eventStatus is the status of the event's container among those it
// carries, nil when it is not listed.
func eventStatus(ev *runtimeapi.ContainerEventResponse) *runtimeapi.ContainerStatus {
	for _, cs := range ev.ContainersStatuses {
		if cs.Id == ev.ContainerId {
			return cs
		}
	}
	return nil
}

// crictlEvents runs `crictl events` with the template and returns its
// lines; the test interrupts it at the end and checks it ended cleanly.
func crictlEvents(t *testing.T, template string) <-chan string {
	t.Helper()
	cmd := exec.Command(suite.crictl, "--runtime-endpoint", "unix://"+suite.socket, "--timeout", "30s", "events", "-o", "go-template", "--template", template)
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			// crictl reports the interruption, and nothing else, as an error.
			if err != nil && !strings.Contains(stderr.String(), "interrupted: context canceled") {
				t.Errorf("crictl events after SIGINT: %v: %s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("crictl events did not end on SIGINT: %s", stderr.String())
		}
		waitEventStreams(t, 0)
	})
	return lines
}

// TestEventsAfterDaemonRestart: a restarted daemon reports the exit of a
// container that was running when it went down; an exit that happened
// while it was down is not reported (a client relists after its stream
// broke).
func TestEventsAfterDaemonRestart(t *testing.T) {
	pullTestImage(t)
	podCfg := podConfig("events-restart")
	podID := runPod(t, podCfg)
	early := runContainer(t, podID, podCfg, containerConfig("early", "/bin/sh", "-c", "sleep 0.3; exit 5"))
	// late exits when told, once the restarted daemon is watched: however
	// long the restart takes.
	late := runContainer(t, podID, podCfg, containerConfig("late", "/bin/sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 4"))
	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // "early" exits while no daemon runs
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, early); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("early: %v", st.State)
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := suite.rt.GetContainerEvents(sctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // sent once subscribed
		t.Fatal(err)
	}
	if _, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: late, Cmd: []string{"touch", "/tmp/go"}, Timeout: 30}); err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.ContainerId != late || ev.ContainerEventType != runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
		t.Fatalf("first event after the restart: %v of %s, want STOPPED of late %s (early is %s)", ev.ContainerEventType, ev.ContainerId, late, early)
	}
	checkEventStatuses(t, ev, podID, runtimeapi.ContainerState_CONTAINER_EXITED)
	if st := eventStatus(ev); st.GetExitCode() != 4 {
		t.Errorf("late's exit code in the event: %d", st.GetExitCode())
	}
}

// TestEventsOnPodRemoval: removing a pod stops and deletes its running
// container, and each stream hears both, STOPPED (with the exit) first.
func TestEventsOnPodRemoval(t *testing.T) {
	pullTestImage(t)
	podCfg := podConfig("events-podrm")
	resp, err := suite.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	podID := resp.PodSandboxId
	ctrID := runContainer(t, podID, podCfg, containerConfig("podrm", "sleep", "999"))
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := suite.rt.GetContainerEvents(sctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.rt.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []runtimeapi.ContainerEventType{runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT} {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for %v: %v", typ, err)
		}
		if ev.ContainerEventType != typ || ev.ContainerId != ctrID {
			t.Fatalf("event %v of %s, want %v of %s", ev.ContainerEventType, ev.ContainerId, typ, ctrID)
		}
		// The pod stops its containers before it is marked not ready; it
		// is stopped, but still there to report, when they are deleted.
		if ev.PodSandboxStatus.GetId() != podID ||
			typ == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT && ev.PodSandboxStatus.GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("%v: pod status %v", typ, ev.PodSandboxStatus)
		}
		st := eventStatus(ev)
		switch {
		case typ == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT && (st.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || st.GetExitCode() != 137):
			t.Errorf("%v: container status %v, want exited by SIGKILL", typ, st)
		case typ == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT && st != nil:
			t.Errorf("%v: the deleted container is still listed: %v", typ, st)
		}
	}
	// Then the sandbox's own event, under the pod's id.
	ev, err := stream.Recv()
	if err != nil || ev.ContainerEventType != runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT || ev.ContainerId != podID {
		t.Errorf("after the containers: %v %v, want DELETED of the pod %s", ev, err, podID)
	}
}

// metric returns the value of a sample of the daemon's metrics (name with
// its labels, as printed).
func metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + suite.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("no metric %s in:\n%s", sample, body)
	return 0
}

func waitEventStreams(t *testing.T, n float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, "cri_mini_container_event_streams") != n {
		if time.Now().After(deadline) {
			t.Fatalf("%v event streams open, want %v", metric(t, "cri_mini_container_event_streams"), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSupervisorMetrics: the metrics count each container's supervisor
// and its memory, and the containers by state.
func TestSupervisorMetrics(t *testing.T) {
	pullTestImage(t)
	podCfg := podConfig("supmetrics")
	podID := runPod(t, podCfg)
	sups, running := metric(t, "cri_mini_supervisor_processes"), metric(t, `cri_mini_containers{state="running"}`)
	ids := []string{
		runContainer(t, podID, podCfg, containerConfig("sup1", "sleep", "999")),
		runContainer(t, podID, podCfg, containerConfig("sup2", "sleep", "999")),
	}
	if got := metric(t, "cri_mini_supervisor_processes"); got != sups+2 {
		t.Errorf("%v supervisors with two more containers, %v before", got, sups)
	}
	if got := metric(t, `cri_mini_containers{state="running"}`); got != running+2 {
		t.Errorf("%v running containers with two more, %v before", got, running)
	}
	// A supervisor is a small Go program: more than 1 MiB, less than 64 each.
	if rss := metric(t, "cri_mini_supervisor_resident_memory_bytes"); rss < 2<<20 || rss > (sups+2)*(64<<20) {
		t.Errorf("supervisors' RSS %v bytes", rss)
	}
	stopped := metric(t, `cri_mini_containers{state="stopped"}`)
	if _, err := suite.rt.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, `cri_mini_containers{state="stopped"}`); got != stopped+1 {
		t.Errorf("%v stopped containers after a stop, %v before", got, stopped)
	}
	// Its supervisor exits right after recording the exit.
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, "cri_mini_supervisor_processes") != sups+1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := metric(t, "cri_mini_supervisor_processes"); got != sups+1 {
		t.Errorf("%v supervisors after one container stopped, want %v", got, sups+1)
	}
}
