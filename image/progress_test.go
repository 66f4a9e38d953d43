package image

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// captureLog sends klog's output to a file until the test ends; the
// function returns what was logged so far.
func captureLog(t *testing.T) func() string {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	klog.LogToStderr(false)
	klog.SetOutput(f)
	t.Cleanup(func() {
		klog.Flush()
		klog.SetOutput(os.Stderr)
		klog.LogToStderr(true)
		f.Close()
	})
	return func() string {
		klog.Flush()
		data, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
}

func randomLayer(t *testing.T, size int) []byte {
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPullProgressLogged: a pull that takes a while logs how far it got
// (bytes of its layers, received and expected) while it runs, and the
// bytes it received go to cri_mini_image_pull_bytes_total.
func TestPullProgressLogged(t *testing.T) {
	roottest.Require(t)
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = 100 * time.Millisecond
	reg := newTestRegistry(t)
	l := layer(t, entry{name: "noise", body: string(randomLayer(t, 16<<10)), typ: '0', mode: 0o644})
	digest, _ := l.Digest()
	size, _ := l.Size()
	reg.slow[digest.String()] = 25 * time.Millisecond // ~0.4 s for the layer
	reg.push(t, "slow:1", imageOf(t, l))
	log := captureLog(t)
	s := openStore(t, reg, Options{})
	pull(t, s, reg.host+"/slow:1")
	out := log()
	if !strings.Contains(out, `"Pulling image" image="`+reg.host+`/slow:1"`) || !strings.Contains(out, "total="+strconv.FormatInt(size, 10)) {
		t.Errorf("no progress line with the layer's %d bytes in the log:\n%s", size, out)
	}
	if got := testutil.ToFloat64(s.metrics.bytes); got != float64(size) {
		t.Errorf("cri_mini_image_pull_bytes_total %v, want %d", got, size)
	}
	if got := testutil.ToFloat64(s.metrics.inProgress); got != 0 {
		t.Errorf("%v pulls in progress after the pull", got)
	}
}

// TestPullStallLoggedCountedAndCancelled: a layer that stops arriving is
// logged as a stall, naming the pull, its endpoint and the layer it waits
// on, and counted in cri_mini_image_pull_stalls_total, at a tenth of the
// stall timeout; at the timeout the pull fails DeadlineExceeded, counted
// by result.
func TestPullStallLoggedCountedAndCancelled(t *testing.T) {
	reg := newTestRegistry(t)
	l := layer(t, entry{name: "noise", body: string(randomLayer(t, 64<<10)), typ: '0', mode: 0o644})
	digest, _ := l.Digest()
	reg.stallAt[digest.String()] = 4096
	reg.push(t, "stuck:1", imageOf(t, l))
	log := captureLog(t)
	s := openStore(t, reg, Options{StallTimeout: 2 * time.Second})
	_, err := s.Pull(context.Background(), reg.host+"/stuck:1", PullOptions{})
	if !errors.Is(err, errdefs.ErrDeadlineExceeded) {
		t.Fatalf("stalled pull: %v, want DeadlineExceeded", err)
	}
	out := log()
	for _, want := range []string{`"Pull stalled: no byte received" image="` + reg.host + `/stuck:1"`, `endpoint="http://` + reg.host + `/v2"`,
		`waitingOn=["` + digest.String() + `"]`, "cancelledAfter=\"2s\""} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %s:\n%s", want, out)
		}
	}
	if got := testutil.ToFloat64(s.metrics.stalls); got != 1 {
		t.Errorf("cri_mini_image_pull_stalls_total %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.metrics.pulls.WithLabelValues("deadline_exceeded")); got != 1 {
		t.Errorf("cri_mini_image_pulls_total{result=deadline_exceeded} %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.metrics.bytes); got < 4096 {
		t.Errorf("cri_mini_image_pull_bytes_total %v, want the 4096 bytes received", got)
	}
}
