package container

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// TestLogSymlinksNotFollowed: a symlink planted at a container's log path,
// or in place of its log sub-directory, is not written through by the
// supervisor, on create or on reopen, and a log path out of the log
// directory is refused.
func TestLogSymlinksNotFollowed(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	logDir := t.TempDir()
	target := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	assertTargetUntouched := func() {
		t.Helper()
		if data, _ := os.ReadFile(target); string(data) != "precious\n" {
			t.Errorf("the symlink's target was written: %q", data)
		}
	}
	withLog := func(id, rel string, args ...string) Bundle {
		b := rt.bundle(t, id, rootfs, args...)
		b.LogDir, b.LogPath = logDir, filepath.Join(logDir, rel)
		return b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if err := rt.Create(ctx, "out", withLog("out", "../escape.log", "true")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("log path out of the log directory: %v", err)
		if err == nil {
			rt.deleteAndCheck(t, "out")
		}
	}
	if err := os.Symlink(target, filepath.Join(logDir, "planted.log")); err != nil {
		t.Fatal(err)
	}
	if err := rt.Create(ctx, "planted", withLog("planted", "planted.log", "echo", "pwned")); err == nil {
		t.Error("create with a symlink at the log path succeeded")
		rt.deleteAndCheck(t, "planted")
	}
	if err := os.Symlink(filepath.Dir(target), filepath.Join(logDir, "subdir")); err != nil {
		t.Fatal(err)
	}
	if err := rt.Create(ctx, "parent", withLog("parent", "subdir/host-file", "echo", "pwned")); err == nil {
		t.Error("create with a symlink in place of the log directory succeeded")
		rt.deleteAndCheck(t, "parent")
	}
	assertTargetUntouched()

	// Reopen after a rotation that an attacker raced with a symlink.
	b := withLog("rotated", "0.log", "sh", "-c", "echo one; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo two")
	rt.startRunning(t, "rotated", b)
	waitForLog(t, b.LogPath, "one")
	if err := os.Rename(b.LogPath, b.LogPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, b.LogPath); err != nil {
		t.Fatal(err)
	}
	if err := rt.ReopenLog("rotated"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("reopen onto a symlink: %v, want FailedPrecondition", err)
	}
	if code, out := rt.execOut(t, "rotated", "touch", "/tmp/go"); code != 0 {
		t.Fatalf("exec touch: %d %q", code, out)
	}
	if _, err := rt.Wait(ctx, "rotated"); err != nil {
		t.Fatal(err)
	}
	assertTargetUntouched()
	if old, _ := readCRILog(t, b.LogPath+".1"); old != "one\ntwo\n" {
		t.Errorf("the output went to %q in the kept file, want one and two", old)
	}
}

// TestLogRecords: every line is a full (F) record without its newline; a
// line longer than maxLogLine is split into partial (P) records; a last
// line without a newline is a partial record, so that a reader gets the
// output back as it was.
func TestLogRecords(t *testing.T) {
	dir := t.TempDir()
	l, err := openCRILog(dir, filepath.Join(dir, "0.log"))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", maxLogLine+10)
	l.copyStream("stdout", strings.NewReader("one\n\n"+long+"\nDONE"))
	l.close()
	data, err := os.ReadFile(filepath.Join(dir, "0.log"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for line := range strings.Lines(string(data)) {
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
		if len(f) != 4 || f[1] != "stdout" {
			t.Fatalf("record %q", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
			t.Errorf("record %q: %v", line, err)
		}
		got = append(got, f[2]+" "+f[3])
	}
	want := []string{"F one", "F ", "P " + long[:maxLogLine], "F " + long[maxLogLine:], "P DONE"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("records\n%.200q\nwant\n%.200q", got, want)
	}
}
