package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21"
	st, err := parseStat(7, "7 (a) b (c)) S"+tail)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stat{Comm: "a) b (c)", State: 'S', PPid: 1, CPUTicks: 11 + 12, StartTime: 4242}); st != want {
		t.Errorf("parsed %+v, want %+v", st, want)
	}
	for _, bad := range []string{
		"",
		"7 a S" + tail,         // no parentheses
		"7 (a) S 1 2 3",        // cut short
		"7 (a) SS" + tail,      // a state is one letter
		"7 (a) S x" + tail[2:], // parent pid not a number
		"7 (a) S 1 2 3 4 5 6 7 8 9 10 x 12 13 14 15 16 17 18 4242 20", // user time
		"7 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -1 20",  // start time
	} {
		if _, err := parseStat(7, bad); err == nil || !strings.HasPrefix(err.Error(), "malformed /proc/7/stat") {
			t.Errorf("parseStat(%q): %v, want malformed", bad, err)
		}
	}
}

func TestReadStatSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PPid != os.Getppid() || !st.Running() || st.StartTime == 0 || st.Comm == "" {
		t.Errorf("own stat %+v: want parent %d, running, a start time and a name", st, os.Getppid())
	}
	if !Alive(os.Getpid()) || !Identify(os.Getpid()).Alive() {
		t.Error("this process is not alive")
	}
}

func TestGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid // reaped: most likely free
	if _, err := ReadStat(pid); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadStat of a reaped process: %v, want ErrNotExist", err)
	}
	if (ID{}).Alive() {
		t.Error("the zero ID is alive")
	}
}

// child starts a process that runs until killed, and reaps it when the
// test ends.
func child(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func TestLifecycle(t *testing.T) {
	cmd := child(t)
	id := Identify(cmd.Process.Pid)
	if !id.Alive() || !Alive(id.Pid) {
		t.Fatalf("%+v: a running child is not alive", id)
	}
	fd, err := id.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := Wait(ctx, fd); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a running child: %v, want the deadline", err)
	}

	if err := Signal(fd, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Wait(ctx, fd); err != nil {
		t.Fatalf("Wait for the killed child: %v", err)
	}
	// Exited, not reaped: a zombie, which has its pid and start time still.
	if st, err := ReadStat(id.Pid); err != nil || st.State != 'Z' {
		t.Fatalf("the killed child: %+v, %v, want a zombie", st, err)
	}
	if id.Alive() || Alive(id.Pid) {
		t.Error("a zombie is alive")
	}
	if err := Signal(fd, unix.SIGKILL); err != nil {
		t.Errorf("Signal to an exited process: %v, want nil", err)
	}
}

func TestOpenChecksStartTime(t *testing.T) {
	cmd := child(t)
	id := Identify(cmd.Process.Pid)
	other := ID{Pid: id.Pid, StartTime: id.StartTime + 1} // the pid, reused
	if other.Alive() {
		t.Error("a pid of another start time is alive")
	}
	if fd, err := other.Open(); !errors.Is(err, os.ErrProcessDone) {
		if err == nil {
			unix.Close(fd)
		}
		t.Errorf("Open of a reused pid: %v, want ErrProcessDone", err)
	}
	if _, err := Open(-1); err == nil {
		t.Error("Open(-1) gave a pidfd")
	}
}

// TestHandle: a Handle tells a running process from an exited one (a
// zombie), is refused for a reused pid, and its descriptor goes with it.
func TestHandle(t *testing.T) {
	cmd := child(t)
	id := Identify(cmd.Process.Pid)
	h, err := id.Handle()
	if err != nil {
		t.Fatal(err)
	}
	if exited, err := h.Exited(); err != nil || exited {
		t.Fatalf("Exited of a running child: %v, %v", exited, err)
	}
	if _, err := (ID{Pid: id.Pid, StartTime: id.StartTime + 1}).Handle(); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Handle of a reused pid: %v, want ErrProcessDone", err)
	}
	before := openFDs(t)
	for range 200 {
		if _, err := id.Handle(); err != nil {
			t.Fatal(err)
		}
	}
	if n := openFDs(t); n < before+200 {
		t.Fatalf("%d descriptors open after 200 handles, %d before: they are not pidfds of their own", n, before)
	}
	deadline := time.Now().Add(10 * time.Second)
	for openFDs(t) > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, %d before 200 dropped handles", openFDs(t), before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if err := unix.Kill(id.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for {
		exited, err := h.Exited()
		if err != nil {
			t.Fatal(err)
		}
		if exited {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Exited false 10 s after SIGKILL")
		}
		time.Sleep(time.Millisecond)
	}
	if st, err := ReadStat(id.Pid); err != nil || st.State != 'Z' {
		t.Errorf("the killed child: %+v, %v, want a zombie, which Exited counts", st, err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// FuzzParseStat: a process names itself (prctl PR_SET_NAME, up to 15
// bytes, any but NUL), and its name lands in /proc/PID/stat between the
// parentheses: whatever it holds, the fields after it are read right, and
// no line makes parseStat panic.
func FuzzParseStat(f *testing.F) {
	for _, s := range []string{"sh", "a) S 1 2 (", ")))", "x\n) R 9", " ", "("} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, comm string) {
		_, _ = parseStat(7, comm) // any line at all: no panic
		if len(comm) > 15 || strings.IndexByte(comm, 0) >= 0 {
			return
		}
		line := "7 (" + comm + ") S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21"
		st, err := parseStat(7, line)
		if want := (Stat{Comm: comm, State: 'S', PPid: 1, CPUTicks: 23, StartTime: 4242}); err != nil || st != want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v", line, st, err, want)
		}
	})
}
