package container

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/roottest"
	pb "github.com/cri-mini/cri-mini/proto/supervisor/v1"
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

// dialRaw connects to the control socket in dir without the client's
// hello, to speak as another version would.
func dialRaw(t *testing.T, dir string) *controlConn {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(dir, controlSocket))
	if err != nil {
		t.Fatal(err)
	}
	cc := newControlConn(c)
	t.Cleanup(cc.close)
	return cc
}

func hello(v pb.Version) *pb.Request {
	return &pb.Request{Request: &pb.Request_Hello{Hello: &pb.Hello{Version: v}}}
}

// TestControlVersions: a client of a newer protocol is answered with the
// supervisor's version and served in it; one below what the supervisor
// speaks is refused; and a daemon refuses a supervisor it cannot speak to
// with a message that says what to do.
func TestControlVersions(t *testing.T) {
	dir := t.TempDir()
	s, err := listenControl(dir, nil, false, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()

	newer := dialRaw(t, dir)
	if err := newer.send(hello(protocolVersion + 5)); err != nil {
		t.Fatal(err)
	}
	var m pb.Reply
	if err := newer.recv(&m); err != nil || m.GetHello().GetVersion() != protocolVersion {
		t.Fatalf("hello from a newer client: %v, %v; want version %v", &m, err, protocolVersion)
	}
	if err := newer.send(&pb.Request{Request: &pb.Request_Attach{Attach: &pb.Attach{}}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		s.mu.Lock()
		n := len(s.attached)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the newer client was not attached")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, _ = s.writer(pb.Stream_STREAM_STDERR).Write([]byte("out"))
	if err := newer.recv(&m); err != nil || string(m.GetOutput().GetData()) != "out" || m.GetOutput().GetStream() != pb.Stream_STREAM_STDERR {
		t.Fatalf("output to the newer client: %v, %v", &m, err)
	}

	older := dialRaw(t, dir)
	if err := older.send(hello(minProtocolVersion - 1)); err != nil {
		t.Fatal(err)
	}
	if err := older.recv(&m); err != nil || m.GetHello().GetVersion() != protocolVersion {
		t.Fatalf("hello from an older client: %v, %v", &m, err)
	}
	if err := older.recv(&m); err == nil {
		t.Fatalf("an older client was served: %v", &m)
	}

	// A supervisor that answers a version below ours.
	oldDir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(oldDir, controlSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		cc := newControlConn(c)
		defer cc.close()
		var req pb.Request
		if cc.recv(&req) == nil {
			_ = cc.send(&pb.Reply{Reply: &pb.Reply_Hello{Hello: &pb.Hello{Version: minProtocolVersion - 1}}})
		}
		_ = cc.recv(&req) // until the daemon hangs up
	}()
	_, err = dialSupervisor(context.Background(), "old", oldDir)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "recreate the container") {
		t.Fatalf("dial an older supervisor: %v, want FailedPrecondition saying to recreate the container", err)
	}
	if _, err := dialSupervisor(context.Background(), "gone", t.TempDir()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("dial where no supervisor listens: %v, want FailedPrecondition", err)
	}
}

// TestRecordsFromAnotherVersion: records are read as protobuf's JSON form
// in either integer spelling, and fields a newer supervisor adds are
// skipped, not refused.
func TestRecordsFromAnotherVersion(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		exitFile: `{"exitCode":137,"signal":9,"finished":"2026-12-07T10:00:00Z","oomKilled":true,"cause":"a field of v9"}`,
		initFile: `{"pid":42,"startTime":12345,"namespaceIds":[1,2]}`,
		supFile:  `{"pid":41,"startTime":"12300"}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ex, err := readExit(dir)
	want := exitRecord{ExitCode: 137, Signal: 9, Finished: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC), OOMKilled: true}
	if err != nil || *ex != want {
		t.Errorf("exit record: %+v, %v; want %+v", ex, err, want)
	}
	if p, err := readProcess(dir, initFile); err != nil || p != (proc.ID{Pid: 42, StartTime: 12345}) {
		t.Errorf("init record: %+v, %v", p, err)
	}
	if p, err := readProcess(dir, supFile); err != nil || p != (proc.ID{Pid: 41, StartTime: 12300}) {
		t.Errorf("supervisor record: %+v, %v", p, err)
	}
	// What this version writes, it reads back.
	if err := writeExit(dir, want); err != nil {
		t.Fatal(err)
	}
	if ex, err := readExit(dir); err != nil || *ex != want {
		t.Errorf("exit record written and read: %+v, %v", ex, err)
	}
}
