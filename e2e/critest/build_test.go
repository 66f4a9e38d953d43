// Package critest holds the scripts that build critest and run it against
// cri-mini (build.sh, run.sh, skip.txt); its test checks the build script.
package critest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildScript builds critest from its module source into an empty cache,
// runs it, and checks that a second call reuses the cached binary.
func TestBuildScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds critest (about 20 s)")
	}
	cache := t.TempDir()
	build := func() string {
		cmd := exec.Command("./build.sh")
		cmd.Env = append(os.Environ(), "CRI_MINI_E2E_CACHE="+cache)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("build.sh: %v\n%s", err, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	bin := build()
	if filepath.Dir(bin) != cache {
		t.Fatalf("binary %s not in the cache %s", bin, cache)
	}
	help, err := exec.Command(bin, "-help").CombinedOutput()
	if err != nil {
		t.Fatalf("critest -help: %v\n%s", err, help)
	}
	for _, flag := range []string{"-runtime-endpoint", "-image-endpoint", "ginkgo.skip"} {
		if !strings.Contains(string(help), flag) {
			t.Errorf("critest -help does not mention %s", flag)
		}
	}
	before, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if again := build(); again != bin {
		t.Fatalf("second build printed %s, want %s", again, bin)
	}
	after, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("second build.sh rebuilt the cached binary")
	}
	leftovers, _ := filepath.Glob(filepath.Join(cache, "*.tmp"))
	if len(leftovers) > 0 {
		t.Errorf("left in the cache: %v", leftovers)
	}
}
