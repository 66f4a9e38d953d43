package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/proc"
)

// upgradeFromBinaries returns the directory of the cri-mini and
// cri-mini-shim that play the older daemon in TestUpgradeKeepsContainers:
// those of the commit e2e/upgrade-from names (the first to speak
// proto/supervisor/v1), from CRI_MINI_UPGRADE_FROM where nothing can be
// compiled (e2e/v2vm's guest), or built with e2e/build-at.sh.
func upgradeFromBinaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("CRI_MINI_UPGRADE_FROM"); dir != "" {
		return dir
	}
	if os.Getenv("CRI_MINI_BIN") != "" {
		t.Skip("CRI_MINI_BIN is prebuilt and CRI_MINI_UPGRADE_FROM names no older binaries to go with it")
	}
	rev, err := os.ReadFile("upgrade-from")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, err := exec.Command("./build-at.sh", strings.TrimSpace(string(rev)), dir).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 3 {
		t.Skipf("the older daemon cannot be built here: %s", out)
	}
	if err != nil {
		t.Fatalf("build the older daemon: %v\n%s", err, out)
	}
	return dir
}

// restartDaemonWith stops the suite's daemon and starts bin in its place,
// on the same state.
func restartDaemonWith(t *testing.T, bin string) {
	t.Helper()
	if err := stopDaemon(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	suite.bin = bin
	if err := startDaemon(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
}

// TestUpgradeKeepsContainers: a daemon upgraded while containers run serves
// the containers the older one started, through the supervisors that older
// binary started: their status, attach, log reopening, exec, an exit while
// no daemon runs, stop and removal.
func TestUpgradeKeepsContainers(t *testing.T) {
	old := upgradeFromBinaries(t)
	current := suite.bin
	t.Cleanup(func() {
		if suite.bin != current {
			restartDaemonWith(t, current)
		}
	})
	restartDaemonWith(t, filepath.Join(old, "cri-mini"))

	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "upgrade")
	ticker := runContainer(t, podID, podCfg, containerConfig("ticker", "/bin/sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"))
	talker := containerConfig("talker", "/bin/sh")
	talker.Stdin, talker.StdinOnce = true, true
	talkerID := runContainer(t, podID, podCfg, talker)
	short := runContainer(t, podID, podCfg, containerConfig("short", "/bin/sh", "-c", "sleep 1; exit 7"))
	supervisors := map[string]int{}
	for _, id := range []string{ticker, talkerID, short} {
		supervisors[id] = supervisorPid(t, id)
	}

	if err := stopDaemon(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // "short" exits while no daemon runs
	suite.bin = current
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{ticker, talkerID} {
		if st := containerStatus(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("%s after the upgrade: %v", st.Metadata.Name, st.State)
		}
		if !proc.Alive(supervisors[id]) {
			t.Errorf("the older supervisor of %s (pid %d) is gone", id, supervisors[id])
		}
	}
	if st := containerStatus(t, short); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 7 {
		t.Errorf("exit recorded by an older supervisor: %v exit %d, want exited 7", st.State, st.ExitCode)
	}

	// The log: kubelet rotates it and asks for a new one.
	logPath := filepath.Join(podCfg.LogDirectory, "ticker.log")
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.rt.ReopenContainerLog(ctx(t), &runtimeapi.ReopenContainerLogRequest{ContainerId: ticker}); err != nil {
		t.Fatalf("ReopenContainerLog through an older supervisor: %v", err)
	}
	if _, err := os.Stat(logPath); err != nil {
		t.Errorf("no new log file when ReopenContainerLog returned: %v", err)
	}

	// Attach: input in, output back, the exit recorded.
	out, err := crictlStdin("echo upgraded-$((6*7))\nexit 3\n", "attach", "-i", talkerID)
	if err != nil || !strings.Contains(out, "upgraded-42") {
		t.Errorf("attach through an older supervisor: %v\n%s", err, out)
	}
	if st := waitExited(t, talkerID); st.ExitCode != 3 {
		t.Errorf("the attached shell: %v exit %d, want exited 3", st.State, st.ExitCode)
	}

	// The ticker's next line lands in the new file (it prints every 0.1 s;
	// the calls above may take less).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		fresh, err := os.ReadFile(logPath)
		if err == nil && strings.Contains(string(fresh), "stdout F tick") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line in the reopened log within 10 s: %q %v", fresh, err)
		}
	}

	resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ticker, Cmd: []string{"/bin/echo", "exec"}, Timeout: 10})
	if err != nil || string(resp.GetStdout()) != "exec\n" {
		t.Errorf("ExecSync after the upgrade: %v %q", err, resp.GetStdout())
	}
	if _, err := suite.rt.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: ticker, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, ticker); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 128+int32(syscall.SIGUSR1) { // the image's stop signal
		t.Errorf("stopped after the upgrade: %v exit %d", st.State, st.ExitCode)
	}
	if _, err := suite.rt.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	for id, pid := range supervisors {
		if proc.Alive(pid) { // a zombie its new parent has not reaped yet is gone
			t.Errorf("the supervisor of %s (pid %d) outlived the pod's removal", id, pid)
		}
	}
}

// supervisorPid is the pid a container's supervisor.json records.
func supervisorPid(t *testing.T, id string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(suite.run, "containers", id, "supervisor.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscanf(string(data), `{"pid":%d`, &pid); err != nil || pid == 0 {
		t.Fatalf("supervisor record %s: %v", data, err)
	}
	return pid
}
