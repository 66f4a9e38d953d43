package cri

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
	"github.com/cri-mini/cri-mini/sandbox"
)

func TestProcessArgsMergeLikeKubelet(t *testing.T) {
	img := imageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"default-arg"}}
	for _, tc := range []struct {
		cmd, args, want []string
	}{
		{nil, nil, []string{"/entry", "default-arg"}},
		{nil, []string{"x"}, []string{"/entry", "x"}},
		{[]string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{[]string{"/bin/sh"}, []string{"-c", "true"}, []string{"/bin/sh", "-c", "true"}},
	} {
		got, err := processArgs(&runtimeapi.ContainerConfig{Command: tc.cmd, Args: tc.args}, img)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("command %v args %v: %v %v, want %v", tc.cmd, tc.args, got, err, tc.want)
		}
	}
	if _, err := processArgs(&runtimeapi.ContainerConfig{}, imageConfig{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no command anywhere: %v", err)
	}
}

func TestProcessEnv(t *testing.T) {
	got := processEnv([]string{"PATH=/img/bin", "A=1", "B=2"},
		[]*runtimeapi.KeyValue{{Key: "B", Value: []byte("override")}, {Key: "C", Value: []byte("3=x")}}, "pod-host")
	want := []string{"PATH=/img/bin", "A=1", "B=override", "C=3=x", "HOSTNAME=pod-host"}
	if !slices.Equal(got, want) {
		t.Errorf("env %v, want %v", got, want)
	}
}

// fakeRootfs is an image root with its own users and groups, and an
// /etc/shadow-like trap: a symlink that would lead to the host's files.
func fakeRootfs(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1000::/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nvideo:x:44:app,web\naudio:x:29:web\nstaff:x:50:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestProcessUser(t *testing.T) {
	root := fakeRootfs(t)
	i64 := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	for _, tc := range []struct {
		name      string
		sc        *runtimeapi.LinuxContainerSecurityContext
		imageUser string
		want      specs.User
	}{
		{"image default", nil, "", specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0}}},
		{"image user by name", nil, "web", specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{29, 33, 44}}},
		{"image uid:group", nil, "1000:staff", specs.User{UID: 1000, GID: 50, AdditionalGids: []uint32{44, 50}}},
		{"unknown uid", nil, "4242", specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0}}},
		{"run_as_user over image", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(7),
			SupplementalGroups: []int64{99}}, "web", specs.User{UID: 1000, GID: 7, AdditionalGids: []uint32{7, 44, 99}}},
		{"run_as_username", &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "app"}, "", specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{44, 1000}}},
		{"strict supplemental groups policy", &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "app", SupplementalGroups: []int64{99},
			SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict}, "", specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{99, 1000}}},
	} {
		got, err := processUser(tc.sc, tc.imageUser, root)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, err, tc.want)
		}
	}
	if _, err := processUser(&runtimeapi.LinuxContainerSecurityContext{RunAsGroup: i64(5)}, "", root); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("run_as_group alone: %v", err)
	}
	if _, err := processUser(nil, "nobody-here", root); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown user name: %v", err)
	}

	// R18: an image whose /etc/passwd is a symlink to the host's must not
	// make the host's users visible.
	evil := t.TempDir()
	if err := os.MkdirAll(filepath.Join(evil, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../etc/passwd", filepath.Join(evil, "etc", "passwd")); err != nil {
		t.Fatal(err)
	}
	if _, err := processUser(nil, "root", evil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("name lookup through a symlink out of the rootfs was not refused: %v", err)
	}
}

func TestCapabilities(t *testing.T) {
	roottest.Require(t)
	sc := func(add, drop []string) *runtimeapi.LinuxContainerSecurityContext {
		return &runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{AddCapabilities: add, DropCapabilities: drop}}
	}
	c, err := capabilities(sc([]string{"NET_ADMIN"}, []string{"cap_chown", "KILL"}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.Bounding, "CAP_NET_ADMIN") || slices.Contains(c.Bounding, "CAP_CHOWN") || slices.Contains(c.Effective, "CAP_KILL") || len(c.Bounding) != 13 {
		t.Errorf("add NET_ADMIN, drop CHOWN KILL: %v", c.Bounding)
	}
	c, err = capabilities(sc([]string{"NET_BIND_SERVICE"}, []string{"ALL"}))
	if err != nil || !slices.Equal(c.Bounding, []string{"CAP_NET_BIND_SERVICE"}) {
		t.Errorf("drop ALL, add one: %v %v", c, err)
	}
	held, err := caps.Held()
	if err != nil {
		t.Fatal(err)
	}
	if c, err = capabilities(sc([]string{"ALL"}, nil)); err != nil || !slices.Equal(c.Bounding, held) {
		t.Errorf("add ALL: %v %v, want what the runtime holds %v", c, err, held)
	}
	if _, err := capabilities(sc([]string{"MAKE_COFFEE"}, nil)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown capability: %v", err)
	}
	c, err = capabilities(&runtimeapi.LinuxContainerSecurityContext{Privileged: true})
	if err != nil || !slices.Contains(c.Bounding, "CAP_SYS_ADMIN") {
		t.Errorf("privileged: %v %v", c, err)
	}
}

func testPod(shared bool) *sandbox.Pod {
	p := &sandbox.Pod{
		ID: "pod1", Hostname: "web-0",
		NetNS: "/run/x/netns/pod1/net", UTSNS: "/run/x/pods/pod1/ns/uts", IPCNS: "/run/x/pods/pod1/ns/ipc",
		ShmPath: "/run/x/pods/pod1/shm", HostsPath: "/run/x/pods/pod1/hosts",
		HostnamePath: "/run/x/pods/pod1/hostname", ResolvPath: "/run/x/pods/pod1/resolv.conf",
	}
	p.Spec.CgroupParent = "/kubepods/besteffort/pod1"
	if shared {
		p.Spec.SharedPID = true
		p.PIDNS = "/run/x/pods/pod1/ns/pid"
	}
	return p
}

func TestContainerSpec(t *testing.T) {
	root := fakeRootfs(t)
	vol := t.TempDir()
	cfg := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: "app", Attempt: 2},
		Image:      &runtimeapi.ImageSpec{Image: "busybox:latest"},
		Args:       []string{"serve"},
		WorkingDir: "/srv",
		Labels:     map[string]string{"l": "1"},
		Mounts: []*runtimeapi.Mount{
			{ContainerPath: "/data", HostPath: vol, Readonly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			{ContainerPath: "/etc/hosts", HostPath: vol},
		},
		Devices:    []*runtimeapi.Device{{ContainerPath: "/dev/mynull", HostPath: "/dev/null", Permissions: "rw"}},
		StopSignal: runtimeapi.Signal_SIGNAL_SIGUSR1,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, OomScoreAdj: -997},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				ReadonlyRootfs: true, NoNewPrivs: true, RunAsUsername: "app",
				Seccomp:     &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				MaskedPaths: []string{"/proc/kcore"},
			},
		},
	}
	spec, cgroup, err := containerSpec(specInput{ID: "c1", Config: cfg, Pod: testPod(true),
		Image:    imageConfig{Entrypoint: []string{"/bin/app"}, Env: []string{"PATH=/bin"}, StopSignal: "SIGQUIT"},
		ImageRef: "sha256:abc", ImageName: "busybox:1.37", RepoDigest: "busybox@sha256:def", Rootfs: root, Driver: "cgroupfs"})
	if err != nil {
		t.Fatal(err)
	}
	if cgroup != "/kubepods/besteffort/pod1/c1" {
		t.Errorf("cgroup %q", cgroup)
	}
	p := spec.Process
	if !slices.Equal(p.Args, []string{"/bin/app", "serve"}) || p.Cwd != "/srv" || p.User.UID != 1000 || !p.NoNewPrivileges || *p.OOMScoreAdj != -997 {
		t.Errorf("process %+v", p)
	}
	if !spec.Root.Readonly || spec.Root.Path != root {
		t.Errorf("root %+v", spec.Root)
	}
	wantNS := map[specs.LinuxNamespaceType]string{specs.MountNamespace: "", specs.CgroupNamespace: "",
		specs.NetworkNamespace: "/run/x/netns/pod1/net", specs.UTSNamespace: "/run/x/pods/pod1/ns/uts",
		specs.IPCNamespace: "/run/x/pods/pod1/ns/ipc", specs.PIDNamespace: "/run/x/pods/pod1/ns/pid"}
	gotNS := map[specs.LinuxNamespaceType]string{}
	for _, ns := range spec.Linux.Namespaces {
		gotNS[ns.Type] = ns.Path
	}
	if !reflect.DeepEqual(gotNS, wantNS) {
		t.Errorf("namespaces %v, want %v", gotNS, wantNS)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range spec.Mounts {
		mounts[m.Destination] = m
	}
	if m := mounts["/data"]; m.Source != vol || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "rslave") {
		t.Errorf("/data mount %+v", m)
	}
	if mounts["/etc/hosts"].Source != vol || mounts["/dev/shm"].Source != "/run/x/pods/pod1/shm" || mounts["/etc/resolv.conf"].Source != "/run/x/pods/pod1/resolv.conf" {
		t.Errorf("pod mounts %+v", mounts)
	}
	if len(spec.Linux.Devices) != 1 || spec.Linux.Devices[0].Path != "/dev/mynull" || spec.Linux.Devices[0].Major != 1 {
		t.Errorf("devices %+v", spec.Linux.Devices)
	}
	r := spec.Linux.Resources
	if *r.CPU.Shares != 512 || *r.CPU.Quota != 50000 || *r.Memory.Limit != 64<<20 || r.Devices[0].Allow || !r.Devices[len(r.Devices)-1].Allow {
		t.Errorf("resources %+v", r)
	}
	if spec.Linux.Seccomp == nil || !slices.Equal(spec.Linux.MaskedPaths, []string{"/proc/kcore"}) || spec.Linux.ReadonlyPaths != nil {
		t.Errorf("seccomp %v masked %v readonly %v", spec.Linux.Seccomp != nil, spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths)
	}
	if a := spec.Annotations; a[annoSandboxID] != "pod1" || a[annoName] != "app" || a[annoAttempt] != "2" || a[annoStopSignal] != "SIGUSR1" || a[annoImageRef] != "sha256:abc" ||
		a[annoImage] != "busybox:1.37" || imageRef(a) != "busybox@sha256:def" {
		t.Errorf("annotations %v", a)
	}
	if sig, err := parseSignal(spec.Annotations[annoStopSignal]); err != nil || sig != 10 {
		t.Errorf("stop signal %v %v", sig, err)
	}

	// Privileged: all caps, nothing masked, all devices, no seccomp.
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{Privileged: true,
		Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}}
	cfg.Mounts = nil
	spec, _, err = containerSpec(specInput{ID: "c2", Config: cfg, Pod: testPod(false), Image: imageConfig{Entrypoint: []string{"/bin/app"}}, Rootfs: root, Driver: "systemd"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Linux.MaskedPaths == nil || len(spec.Linux.MaskedPaths) != 0 || spec.Linux.Seccomp != nil || !spec.Linux.Resources.Devices[0].Allow {
		t.Errorf("privileged: masked %v seccomp %v devices %v", spec.Linux.MaskedPaths, spec.Linux.Seccomp, spec.Linux.Resources.Devices)
	}
	// The host's devices (not its devpts or console), /sys and its cgroups read-write.
	var devs []string
	for _, d := range spec.Linux.Devices {
		devs = append(devs, d.Path)
	}
	if !slices.Contains(devs, "/dev/null") || !slices.Contains(devs, "/dev/ptmx") || slices.Contains(devs, "/dev/console") || slices.ContainsFunc(devs, func(p string) bool { return strings.HasPrefix(p, "/dev/pts/") }) {
		t.Errorf("privileged devices: %v", devs)
	}
	for _, dst := range []string{"/sys", "/sys/fs/cgroup"} {
		if i := slices.IndexFunc(spec.Mounts, func(m specs.Mount) bool { return m.Destination == dst }); i < 0 || !slices.Contains(spec.Mounts[i].Options, "rw") {
			t.Errorf("privileged %s: mounts %+v, want it read-write", dst, spec.Mounts)
		}
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace && ns.Path != "" {
			t.Errorf("pod without a shared pid namespace: container joins %s", ns.Path)
		}
	}
}

func TestContainerSpecBadInput(t *testing.T) {
	root := fakeRootfs(t)
	base := func() *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "x"}, Command: []string{"/bin/true"}}
	}
	for name, mod := range map[string]func(*runtimeapi.ContainerConfig){
		"missing host path": func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/d", HostPath: "/nonexistent/dir"}}
		},
		"relative mount": func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "d", HostPath: "/tmp"}}
		},
		"not a device": func(c *runtimeapi.ContainerConfig) { c.Devices = []*runtimeapi.Device{{HostPath: "/etc/hostname"}} },
		"bad device perms": func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", Permissions: "rwx"}}
		},
		"relative workdir":   func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "srv" },
		"unknown capability": func(c *runtimeapi.ContainerConfig) { c.Linux = linuxWithCaps([]string{"BOGUS"}) },
		"missing seccomp file": func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/nonexistent.json"}}}
		},
	} {
		cfg := base()
		mod(cfg)
		if _, _, err := containerSpec(specInput{ID: "c", Config: cfg, Pod: testPod(false), Rootfs: root}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want invalid argument", name, err)
		}
	}
}

func linuxWithCaps(add []string) *runtimeapi.LinuxContainerConfig {
	return &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{AddCapabilities: add}}}
}

func TestCgroupPath(t *testing.T) {
	for _, tc := range []struct{ driver, parent, want string }{
		{"cgroupfs", "/kubepods/pod1", "/kubepods/pod1/c"},
		{"cgroupfs", "", "/cri-mini/c"},
		{"systemd", "kubepods-pod1.slice", "kubepods-pod1.slice:cri-mini:c"},
		{"systemd", "", "system.slice:cri-mini:c"},
	} {
		if got := cgroupPath(tc.driver, tc.parent, "c"); got != tc.want {
			t.Errorf("%s %q: %q, want %q", tc.driver, tc.parent, got, tc.want)
		}
	}
}

func TestResourcesRoundTrip(t *testing.T) {
	in := &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 20000, CpuShares: 256, MemoryLimitInBytes: 1 << 30,
		MemorySwapLimitInBytes: 2 << 30, CpusetCpus: "0-1", CpusetMems: "0",
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}}, Unified: map[string]string{"memory.high": "max"}}
	if got := criResources(linuxResources(in)); !proto.Equal(got, in) {
		t.Errorf("round trip:\n got  %v\n want %v", got, in)
	}
}

func TestSpecMountsRecursiveReadOnlyAndImageVolumes(t *testing.T) {
	host := t.TempDir()
	image := t.TempDir()
	if err := os.MkdirAll(filepath.Join(image, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The image is untrusted: a symlink out of it must resolve inside it.
	if err := os.Symlink("/", filepath.Join(image, "escape")); err != nil {
		t.Fatal(err)
	}
	private := runtimeapi.MountPropagation_PROPAGATION_PRIVATE
	mounts := func(ms ...*runtimeapi.Mount) ([]specs.Mount, error) {
		return specMounts(&runtimeapi.ContainerConfig{Mounts: ms}, testPod(false), map[int]string{0: image})
	}
	got, err := mounts(&runtimeapi.Mount{ContainerPath: "/mnt", HostPath: host, Readonly: true, RecursiveReadOnly: true, Propagation: private})
	if err != nil || !slices.Contains(got[len(got)-1].Options, "rro") {
		t.Errorf("recursive read-only mount: %+v %v", got, err)
	}
	for name, m := range map[string]*runtimeapi.Mount{
		"rro without readonly":       {ContainerPath: "/mnt", HostPath: host, RecursiveReadOnly: true},
		"rro with host-to-container": {ContainerPath: "/mnt", HostPath: host, Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		"writable image volume":      {ContainerPath: "/img", Image: &runtimeapi.ImageSpec{Image: "x"}},
		"missing image sub path":     {ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}, ImageSubPath: "nope"},
	} {
		if _, err := mounts(m); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	got, err = mounts(&runtimeapi.Mount{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}, ImageSubPath: "etc"})
	if err != nil || got[len(got)-1].Source != filepath.Join(image, "etc") {
		t.Errorf("image volume sub path: %+v %v", got, err)
	}
	got, err = mounts(&runtimeapi.Mount{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "x"}, ImageSubPath: "escape/etc"})
	if err != nil || got[len(got)-1].Source != filepath.Join(image, "etc") {
		t.Errorf("image volume sub path through a symlink left the image: %+v %v", got, err)
	}
	if p := rootfsPropagation([]*runtimeapi.Mount{{Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}, {Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}}); p != "rshared" {
		t.Errorf("root propagation with a bidirectional mount: %q", p)
	}
}

// TestLocalhostSeccompProfileReadSafely: a localhost profile that is a
// FIFO (reading would wait for a writer), a directory, a file over the cap
// or a symlink to any of them is InvalidArgument at once, and the error
// names only the path the client gave.
func TestLocalhostSeccompProfileReadSafely(t *testing.T) {
	dir, hidden := t.TempDir(), t.TempDir()
	fifo := filepath.Join(hidden, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.json")
	if err := os.WriteFile(huge, append([]byte(`{"defaultAction":"SCMP_ACT_ALLOW","x":"`), make([]byte, maxSeccompProfile)...), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := func(ref string) *runtimeapi.LinuxContainerSecurityContext {
		return &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}}
	}
	for ref, want := range map[string]string{fifo: "a FIFO", link: "a FIFO", dir: "a directory", huge: "larger than"} {
		_, err := seccompProfile(sc(ref), nil)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), ref) {
			t.Errorf("%s: %v, want InvalidArgument naming it and saying %q", ref, err, want)
		}
		if err != nil && ref == link && strings.Contains(err.Error(), hidden) {
			t.Errorf("the error names the symlink's target, a host path the client did not give: %v", err)
		}
	}
	if p, err := seccompProfile(sc(good), nil); err != nil || p.DefaultAction != specs.ActErrno {
		t.Errorf("a good profile: %+v %v", p, err)
	}
}

// TestTargetPIDNamespace: NamespaceMode TARGET joins the pid namespace
// the target container is in: the one its init made (by the init's pid),
// the pod's it joined, or the host's (no entry).
func TestTargetPIDNamespace(t *testing.T) {
	target := func(pidns ...specs.LinuxNamespace) *container.State {
		return &container.State{Pid: 4242, Spec: &specs.Spec{Linux: &specs.Linux{Namespaces: pidns}}}
	}
	opts := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "t"}
	for _, tc := range []struct {
		name   string
		target *container.State
		want   string // the pid namespace joined; "" none (the host's)
	}{
		{"own namespace", target(specs.LinuxNamespace{Type: specs.PIDNamespace}), "/proc/4242/ns/pid"},
		{"the pod's", target(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/run/x/pods/pod1/ns/pid"}), "/run/x/pods/pod1/ns/pid"},
		{"the host's", target(), ""},
	} {
		got := "none"
		for _, ns := range containerNamespaces(testPod(false), opts, tc.target) {
			if ns.Type == specs.PIDNamespace {
				got = ns.Path
			}
		}
		if (tc.want == "" && got != "none") || (tc.want != "" && got != tc.want) {
			t.Errorf("%s: joins %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDeviceOwnership: with device_ownership_from_security_context a
// container's devices are owned by its run_as_user and run_as_group (0
// for one left unset); without it, by the host node's owner.
func TestDeviceOwnership(t *testing.T) {
	root := fakeRootfs(t)
	var st unix.Stat_t
	if err := unix.Stat("/dev/tty", &st); err != nil {
		t.Skip(err)
	}
	owner := func(sc *runtimeapi.LinuxContainerSecurityContext, on bool) string {
		t.Helper()
		cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "dev"}, Command: []string{"/bin/true"},
			Devices: []*runtimeapi.Device{{HostPath: "/dev/tty", ContainerPath: "/dev/mine"}},
			Linux:   &runtimeapi.LinuxContainerConfig{SecurityContext: sc}}
		spec, _, err := containerSpec(specInput{ID: "c", Config: cfg, Pod: testPod(false), Rootfs: root, DeviceOwnership: on})
		if err != nil {
			t.Fatal(err)
		}
		d := spec.Linux.Devices[0]
		return fmt.Sprintf("%d:%d", *d.UID, *d.GID)
	}
	ids := &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 2000}}
	host := fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	for _, tc := range []struct {
		name string
		sc   *runtimeapi.LinuxContainerSecurityContext
		on   bool
		want string
	}{
		{"on, with ids", ids, true, "1000:2000"},
		{"on, without ids", nil, true, "0:0"},
		{"on, user only", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1000}}, true, "1000:0"},
		{"off", ids, false, host},
	} {
		if got := owner(tc.sc, tc.on); got != tc.want {
			t.Errorf("%s: device owned by %s, want %s", tc.name, got, tc.want)
		}
	}
}
