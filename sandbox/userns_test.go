package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/nstest"
	"github.com/cri-mini/cri-mini/internal/proc"
)

// testRange is a host range for a test's user namespace: kubelet's shape,
// far above the ids of this machine's users and of other tests.
func testRange(n int) uint32 { return uint32(0x10000 * (3000 + n)) }

func userNS(host, size uint32) *UserNamespace {
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: host, Size: size}}
	return &UserNamespace{UIDs: m, GIDs: m}
}

// runInUserNS runs argv (util-linux nsenter and a host tool) in the user
// namespace pinned at pin and returns its output.
func runInUserNS(t *testing.T, pin string, argv ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--user=" + pin, "--"}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter --user=%s %v: %v: %s", pin, argv, err, out)
	}
	return string(out)
}

func TestUserNamespacePod(t *testing.T) {
	e := newEnv(t, 20)
	m := e.manager(t)
	ctx := context.Background()
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("sharedPID=%v", shared), func(t *testing.T) {
			host := testRange(1)
			s := spec(fmt.Sprintf("userns-%v", shared))
			s.Hostname = "userns-0"
			s.SharedPID = shared
			s.UserNS = userNS(host, 65536)
			s.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80"}
			p, err := m.Run(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })

			if ok, err := nspin.IsPinned(p.UserNS); !ok {
				t.Fatalf("user namespace %q not pinned: %v", p.UserNS, err)
			}
			// Exactly the mapping asked for, for uids and gids.
			want := fmt.Sprintf("0 %d 65536", host)
			for _, f := range []string{"uid_map", "gid_map"} {
				if got := strings.Join(strings.Fields(runInUserNS(t, p.UserNS, "cat", "/proc/self/"+f)), " "); got != want {
					t.Errorf("%s in the pod's user namespace: %q, want %q", f, got, want)
				}
			}
			// The pod's namespaces are owned by its user namespace, not
			// by the host's.
			userns := nstest.Inode(t, p.UserNS)
			if userns == nstest.Inode(t, "/proc/self/ns/user") {
				t.Fatal("the pod's user namespace is the host's")
			}
			for _, ns := range []string{p.NetNS, p.UTSNS, p.IPCNS} {
				if got := nstest.Owner(t, ns); got != userns {
					t.Errorf("%s is owned by user namespace %d, want the pod's %d", ns, got, userns)
				}
			}
			if got := readInNS(t, p.UTSNS, nspin.UTS, "/proc/sys/kernel/hostname"); got != "userns-0" {
				t.Errorf("hostname in the pod: %q", got)
			}
			if got := readInNS(t, p.NetNS, nspin.Net, "/proc/sys/net/ipv4/ip_unprivileged_port_start"); got != "80" {
				t.Errorf("net sysctl in the pod: %q", got)
			}
			if len(p.IPs) != 1 {
				t.Errorf("pod IPs %v", p.IPs)
			}
			// What is the pod's own belongs to its root on the host.
			for _, f := range []string{p.ShmPath, p.HostsPath, p.HostnamePath, p.ResolvPath} {
				var st unix.Stat_t
				if err := unix.Stat(f, &st); err != nil || st.Uid != host || st.Gid != host {
					t.Errorf("%s owned by %d:%d (%v), want the pod's root %d", f, st.Uid, st.Gid, err, host)
				}
			}
			if shared {
				proc := fmt.Sprintf("/proc/%d/", p.PausePID)
				if nstest.Owner(t, p.PIDNS) != userns || !nstest.Same(t, proc+"ns/user", p.UserNS) {
					t.Error("the pause's pid namespace or the pause is outside the pod's user namespace")
				}
				// The pause's 65535 is the host's host+65535, with no
				// capability anywhere.
				status := procStatus(t, p.PausePID)
				if id := fmt.Sprint(host + 65535); status["Uid"] != strings.Repeat(id+"\t", 3)+id || status["CapEff"] != "0000000000000000" {
					t.Errorf("pause Uid %q CapEff %q, want %s and none", status["Uid"], status["CapEff"], id)
				}
			}
			if err := m.Remove(ctx, p.ID); err != nil {
				t.Fatal(err)
			}
			for _, pin := range []string{p.UserNS, p.NetNS, p.UTSNS, p.IPCNS} {
				if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("pin %s left after Remove: %v", pin, err)
				}
			}
		})
	}
}

// TestUserNamespaceRefused: mappings that are not one range of the pod's
// own, and a user namespace with the host's namespaces, are InvalidArgument
// before anything is made; a range of any start and size is taken (as
// critest's), and the admin's policy admits the host's root.
func TestUserNamespaceRefused(t *testing.T) {
	e := newEnv(t, 21)
	m := e.manager(t)
	ctx := context.Background()
	host := testRange(2)
	one := func(c, h, n uint32) []specs.LinuxIDMapping {
		return []specs.LinuxIDMapping{{ContainerID: c, HostID: h, Size: n}}
	}
	for name, tc := range map[string]struct {
		modify func(*Spec)
		want   string
	}{
		"two uid ranges": {func(s *Spec) {
			s.UserNS.UIDs = append(one(0, host, 65536), one(65536, host+65536, 65536)...)
		}, "exactly one"},
		"no gid range":     {func(s *Spec) { s.UserNS.GIDs = nil }, "0 gid mappings"},
		"root not mapped":  {func(s *Spec) { s.UserNS.UIDs = one(1, host, 65536) }, "container id 0"},
		"empty":            {func(s *Spec) { s.UserNS.GIDs = one(0, host, 0) }, "empty"},
		"host root":        {func(s *Spec) { s.UserNS = userNS(0, 65536) }, "host's uid 0"},
		"past the last id": {func(s *Spec) { s.UserNS = userNS(0xffff0000, 65536) }, "past the largest id"},
		"host network":     {func(s *Spec) { s.HostNetwork = true }, "host's network"},
		"host pid":         {func(s *Spec) { s.HostPID = true }, "host's network, ipc or pid"},
		"pause outside": {func(s *Spec) {
			s.SharedPID = true
			s.UserNS = userNS(host, 65536)
			s.RunAsUser = new(int64(70000))
		}, "pause process's uid 70000"},
	} {
		t.Run(name, func(t *testing.T) {
			s := spec("refused")
			s.UserNS = userNS(host, 65536)
			tc.modify(&s)
			_, err := m.Run(ctx, s)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want InvalidArgument saying %q", err, tc.want)
			}
			if pods := m.List(); len(pods) != 0 {
				t.Fatalf("refused pod left %d pods", len(pods))
			}
		})
	}

	s := spec("admitted")
	// critest's mapping: 100000 ids from host id 1000, not kubelet's shape.
	s.UserNS = userNS(1000, 100000)
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatalf("a range of another shape: %v", err)
	}
	if err := m.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	m.userNS = UserNamespacePolicy{AllowHostRoot: true}
	s = spec("host-root")
	s.UserNS = userNS(0, 65536)
	if p, err = m.Run(ctx, s); err != nil {
		t.Fatalf("the host's root, which the admin allows: %v", err)
	}
	if err := m.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
}

// TestUserNamespacesDoNotOverlap: a pod may not take host ids a running
// pod of another pod UID has (they would share files and processes as one
// user); a new sandbox of the same pod, or after the other stopped, may.
func TestUserNamespacesDoNotOverlap(t *testing.T) {
	e := newEnv(t, 22)
	m := e.manager(t)
	ctx := context.Background()
	host := testRange(3)
	first := spec("first")
	first.UserNS = userNS(host, 2*65536)
	p, err := m.Run(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })

	other := spec("other")
	other.UserNS = userNS(host+65536, 65536)
	if _, err := m.Run(ctx, other); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), p.ID) {
		t.Fatalf("overlapping pod: %v, want InvalidArgument naming %s", err, p.ID)
	}
	again := first
	again.Metadata.Attempt = 1
	p2, err := m.Run(ctx, again)
	if err != nil {
		t.Fatalf("the same pod's next sandbox: %v", err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p2.ID) })
	for _, id := range []string{p.ID, p2.ID} {
		if err := m.Stop(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	p3, err := m.Run(ctx, other)
	if err != nil {
		t.Fatalf("after the overlapping pods stopped: %v", err)
	}
	if err := m.Remove(ctx, p3.ID); err != nil {
		t.Fatal(err)
	}
}

// TestUserNamespacePodRollback: a pod with a user namespace that fails
// half way, before its namespaces are pinned (the pause refuses its
// seccomp filter) or after (a sysctl this kernel lacks), leaves no pin,
// mount or process behind.
func TestUserNamespacePodRollback(t *testing.T) {
	e := newEnv(t, 23)
	m := e.manager(t)
	ctx := context.Background()
	filter := m.pauseFilter
	for name, tc := range map[string]struct {
		modify func(*Spec)
		want   string
	}{
		"pause fails": {func(s *Spec) {
			s.SharedPID = true
			m.pauseFilter = func() ([]unix.SockFilter, error) { return []unix.SockFilter{{Code: 0xffff}}, nil }
		}, "seccomp"},
		"sysctl fails": {func(s *Spec) { s.Sysctls = map[string]string{"net.ipv4.no_such_sysctl": "1"} }, "does not exist"},
	} {
		t.Run(name, func(t *testing.T) {
			m.pauseFilter = filter
			s := spec("rollback")
			s.UserNS = userNS(testRange(4), 65536)
			tc.modify(&s)
			if _, err := m.Run(ctx, s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want a failure saying %q", err, tc.want)
			}
			entries, err := os.ReadDir(m.dir)
			if err != nil || len(entries) != 0 {
				t.Fatalf("pods dir after rollback: %v (%v)", entries, err)
			}
			if kids := children(t); len(kids) != 0 {
				t.Fatalf("processes left: %v", kids)
			}
			assertNoMountsUnder(t, e.runRoot)
		})
	}
}

// children lists the live processes this test process started that run
// the pause constructor (cri-mini-pause, cri-mini-hold).
func children(t *testing.T) []string {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if st.Running() && st.PPid == os.Getpid() && strings.HasPrefix(string(cmdline), "cri-mini-") {
			out = append(out, p.Name()+" "+string(cmdline))
		}
	}
	return out
}
