package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
)

// TestExplainThroughCRI: a container made through the CRI carries its plan
// in the verbose ContainerStatus, and `cri-mini explain` prints the same
// plan (--json) and a script that joins the pod's namespaces (and says
// that the pod set the hostname, R15), from the daemon's run root, by an
// ID prefix.
func TestExplainThroughCRI(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "explain")
	id := runContainer(t, podID, podCfg, containerConfig("explained", "/bin/sleep", "600"))

	resp, err := suite.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Plan      []container.Step `json:"plan"`
		PlanError string           `json:"planError"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || len(info.Plan) == 0 {
		t.Fatalf("verbose status info: %v, plan error %q", err, info.PlanError)
	}
	var netns string
	for _, s := range info.Plan {
		if s.Kind == container.KindNamespace && s.Namespace.Type == "network" {
			netns = s.Namespace.Path
		}
	}
	if netns == "" {
		t.Fatalf("the plan does not join the pod's network namespace: %+v", info.Plan)
	}

	explain := func(args ...string) string {
		out, err := exec.Command(suite.bin, append([]string{"explain", "--runroot", suite.run}, args...)...).Output()
		if err != nil {
			t.Fatalf("cri-mini explain %v: %v", args, err)
		}
		return string(out)
	}
	var plan []container.Step
	if err := json.Unmarshal([]byte(explain("--json", id[:12])), &plan); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(plan)
	b, _ := json.Marshal(info.Plan)
	if string(a) != string(b) {
		t.Errorf("explain --json differs from the verbose status' plan:\n%s\n%s", a, b)
	}
	script := explain(id[:12])
	// The pod set the hostname in its uts namespace, which the container
	// joins: R15 says so.
	for _, want := range []string{"nsenter --net=" + netns, "# R13: pivot_root", "pivot_root . .", "/bin/sleep", "--bounding-set=-all,",
		"# R15: hostname\n  # set by the pod: the container joined the pod's uts namespace"} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
}
