package container

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// lockedBuffer collects output written from another goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

func TestAttach(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	for _, tc := range []struct {
		name  string
		tty   bool
		args  []string
		input string
		code  int
		out   string
	}{
		// stdin_once: the end of the client's input is the end of cat's.
		{"pipes", false, []string{"sh", "-c", "cat; echo err >&2"}, "hello\n", 0, "hello\n"},
		{"tty", true, []string{"sh"}, "echo hi-$((1+2)); exit 4\n", 4, "hi-3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rt.bundle(t, tc.name, rootfs, tc.args...)
			b.Tty, b.Stdin, b.StdinOnce = tc.tty, true, true
			rt.startRunning(t, tc.name, b)
			var out, errOut lockedBuffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := rt.Attach(ctx, tc.name, AttachOptions{Stdin: strings.NewReader(tc.input), Stdout: &out, Stderr: &errOut}); err != nil {
				t.Fatalf("attach: %v", err)
			}
			st, err := rt.Wait(ctx, tc.name)
			if err != nil || st.ExitCode != tc.code {
				t.Errorf("after attach: %+v, %v; want exit %d", st, err, tc.code)
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("attached stdout %q, want %q in it", out.String(), tc.out)
			}
			if !tc.tty && errOut.String() != "err\n" {
				t.Errorf("attached stderr %q", errOut.String())
			}
			if logged, _ := readCRILog(t, b.LogPath); !strings.Contains(logged, tc.out) {
				t.Errorf("log %q, want %q in it", logged, tc.out)
			}
			err = rt.Attach(ctx, tc.name, AttachOptions{Stdout: &out})
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("attach to a stopped container: %v, want FailedPrecondition", err)
			}
		})
	}
}
