package e2e

import (
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStatusFields: ContainerStatus reports the stop signal in force (the
// config's, here a real-time one, or the image's), the image spec with
// its annotations (ListContainers too) and a message where the
// exit code does not say it all (a death by signal; none for an ordinary
// exit); PodSandboxStatus carries a timestamp taken before it read
// anything and the status of every container of the pod, as kubelet's
// evented PLEG reads them.
func TestStatusFields(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "status-fields")
	rt := containerConfig("rt", "sleep", "600")
	rt.StopSignal = runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3
	rtID := runContainer(t, podID, podCfg, rt)
	img := containerConfig("img", "sleep", "600")
	img.Image.Annotations = map[string]string{"example.com/pull-hint": "yes"}
	imgID := runContainer(t, podID, podCfg, img)
	exitID := runContainer(t, podID, podCfg, containerConfig("exit3", "sh", "-c", "exit 3"))

	if got := containerStatus(t, rtID).StopSignal; got != runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3 {
		t.Errorf("stop signal from the config: %v, want SIGRTMINPLUS3", got)
	}
	if got := containerStatus(t, imgID).StopSignal; got != runtimeapi.Signal_SIGNAL_SIGUSR1 {
		t.Errorf("stop signal from the image: %v, want SIGUSR1", got)
	}
	list, err := suite.rt.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: imgID}})
	if err != nil || len(list.Containers) != 1 {
		t.Fatalf("ListContainers: %v %v", list, err)
	}
	for where, spec := range map[string]*runtimeapi.ImageSpec{"status": containerStatus(t, imgID).Image, "list": list.Containers[0].Image} {
		if spec.Annotations["example.com/pull-hint"] != "yes" || spec.Image != suite.image {
			t.Errorf("image spec in the %s: %+v, want the config's with its annotations", where, spec)
		}
	}
	if st := waitExited(t, exitID); st.ExitCode != 3 || st.Reason != "Error" || st.Message != "" {
		t.Errorf("exit 3: code %d reason %q message %q, want 3, Error and no message", st.ExitCode, st.Reason, st.Message)
	}
	if _, err := suite.rt.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: imgID}); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, imgID); st.ExitCode != 137 || st.Message != "killed by signal SIGKILL (9)" {
		t.Errorf("stopped without grace: code %d message %q, want 137 and the signal", st.ExitCode, st.Message)
	}

	before := time.Now().UnixNano()
	resp, err := suite.rt.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Timestamp < before || resp.Timestamp > time.Now().UnixNano() {
		t.Errorf("pod status timestamp %d, want the time of the call (after %d)", resp.Timestamp, before)
	}
	var got []string
	for _, cs := range resp.ContainersStatuses {
		got = append(got, cs.Metadata.Name+" "+cs.State.String())
		if want := containerStatus(t, cs.Id); want.State != cs.State || want.ExitCode != cs.ExitCode || want.StopSignal != cs.StopSignal {
			t.Errorf("pod status has %s as %v/%d/%v, ContainerStatus as %v/%d/%v", cs.Metadata.Name, cs.State, cs.ExitCode, cs.StopSignal, want.State, want.ExitCode, want.StopSignal)
		}
	}
	slices.Sort(got)
	if want := []string{"exit3 CONTAINER_EXITED", "img CONTAINER_EXITED", "rt CONTAINER_RUNNING"}; !slices.Equal(got, want) {
		t.Errorf("containers in the pod status: %v, want %v", got, want)
	}
}
