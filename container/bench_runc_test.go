package container

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BenchmarkRuncRunTrue and BenchmarkCrunRunTrue run /bin/true on the same
// prepared busybox rootfs as BenchmarkRunTrue, with runc and crun (Debian
// packages) and their own default spec (`runc spec`: the same namespaces,
// mounts, masked and read-only paths), each run a foreground `run` that
// creates, starts, waits for and deletes the container. Compare the ns/op
// of the three in one `go test -bench RunTrue` run.
func BenchmarkRuncRunTrue(b *testing.B) { benchmarkOCIRuntime(b, "runc") }

// crun 1.8 refuses this host's hybrid layout ("cgroups in hybrid mode not
// supported") because the cgroup2 mount at /sys/fs/cgroup/unified has a
// controller: its runs happen in a mount namespace without that mount, so
// it sees plain cgroup v1 (made once, outside the timed loop's runs).
func BenchmarkCrunRunTrue(b *testing.B) { benchmarkOCIRuntime(b, "crun") }

func benchmarkOCIRuntime(b *testing.B, runtime string) {
	path, err := exec.LookPath(runtime)
	if err != nil {
		b.Skipf("%s is not installed (apt-get install %s)", runtime, runtime)
	}
	bundle := b.TempDir()
	if out, err := exec.Command("runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		b.Skipf("runc spec: %v %s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		b.Fatal(err)
	}
	spec.Root = &specs.Root{Path: busyboxRootfs(b)}
	spec.Process.Args, spec.Process.Terminal = []string{"true"}, false
	spec.Linux.CgroupsPath = "/cri-mini-bench-" + runtime
	if data, err = json.Marshal(spec); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = removeBenchCgroups(spec.Linux.CgroupsPath) })
	if runtime == "crun" {
		// One shell in a private mount namespace runs the b.N runs.
		b.ResetTimer()
		script := `umount /sys/fs/cgroup/unified 2>/dev/null; i=0; while [ $i -lt "$1" ]; do "$2" run --bundle "$3" crun-bench-$i || exit 1; i=$((i+1)); done`
		out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", strconv.Itoa(b.N), path, bundle).CombinedOutput()
		if err != nil {
			b.Fatalf("crun run: %v %s", err, out)
		}
		return
	}
	i := 0
	for b.Loop() {
		id := runtime + "-bench-" + strconv.Itoa(i)
		i++
		if out, err := exec.Command(path, "run", "--bundle", bundle, id).CombinedOutput(); err != nil {
			b.Fatalf("%s run: %v %s", runtime, err, out)
		}
	}
}

// removeBenchCgroups removes the cgroup the OCI runtimes used, in every v1
// hierarchy and the unified one.
func removeBenchCgroups(path string) error {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", path))
	if d := filepath.Join("/sys/fs/cgroup", path); dirExists(d) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	return nil
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
