package images

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

// pulled holds every image as pulled back from a loopback registry after
// Build, BuildNode and Push, by repository:tag; inputs are what they were
// built from.
var (
	pulled map[string]v1.Image
	inputs NodeInputs
)

// TestMain builds the images once (helper programs, Debian's shell), pushes
// them to an in-process registry and pulls them back for the tests.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		fmt.Println("e2e/images: tests need root (chroot, setuid files, namespaces); skipped")
		os.Exit(0)
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/images:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx := context.Background()
	cache, err := os.UserCacheDir()
	if err != nil {
		return 0, err
	}
	in := Inputs{Busybox: "/bin/busybox"}
	if in.Shell, err = DebianShell(ctx, filepath.Join(cache, "cri-mini-e2e")); err != nil {
		return 0, err
	}
	bin, err := os.MkdirTemp("", "images-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(bin)
	if in.Programs, err = BuildPrograms(ctx, "../..", bin); err != nil {
		return 0, err
	}
	// The node images' agnhost: any static program serves to check the
	// layout, any key pair (critest's module has none: a made one).
	tls, err := os.MkdirTemp("", "images-test-tls-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tls)
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		if err := os.WriteFile(filepath.Join(tls, f), []byte(f), 0o600); err != nil {
			return 0, err
		}
	}
	node := NodeInputs{Inputs: in, Agnhost: in.Pause, AgnhostTLS: tls, Bash: "/bin/bash", Curl: "/usr/bin/curl"}
	if node.Netcat, err = DebianBinary(ctx, filepath.Join(cache, "cri-mini-e2e"), "netcat-openbsd", "bin/nc.openbsd"); err != nil {
		return 0, err
	}
	built, err := buildAll(node)
	if err != nil {
		return 0, err
	}
	inputs = node
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if err := Push(ctx, host, built); err != nil {
		return 0, err
	}
	pulled = map[string]v1.Image{}
	for _, t := range built {
		ref, err := name.NewTag(host+"/"+t.Ref, name.Insecure)
		if err != nil {
			return 0, err
		}
		if pulled[t.Ref], err = remote.Image(ref, remote.WithContext(ctx)); err != nil {
			return 0, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	return m.Run(), nil
}

// The references critest v1.37.0 uses, without their registry host (the
// runtime maps registry.k8s.io, gcr.io and k8s.gcr.io to one registry).
var critestRefs = []string{
	"e2e-test-images/busybox:1.29-2", "e2e-test-images/nginx:1.14-2", "e2e-test-images/httpd:2.4.39-4",
	"e2e-test-images/nonewprivs:1.3", "k8s-staging-cri-tools/hostnet-nginx-amd64:latest",
	"k8s-staging-cri-tools/test-image-user-uid:latest", "k8s-staging-cri-tools/test-image-user-username:latest",
	"k8s-staging-cri-tools/test-image-user-uid-group:latest", "k8s-staging-cri-tools/test-image-user-username-group:latest",
	"k8s-staging-cri-tools/test-image-predefined-group:latest", "k8s-staging-cri-tools/test-image-latest:latest",
	"k8s-staging-cri-tools/test-image-tag:test", "k8s-staging-cri-tools/test-image-tag:all",
	"k8s-staging-cri-tools/test-image-1:latest", "k8s-staging-cri-tools/test-image-2:latest", "k8s-staging-cri-tools/test-image-3:latest",
	"k8s-staging-cri-tools/test-image-tags:1", "k8s-staging-cri-tools/test-image-tags:2", "k8s-staging-cri-tools/test-image-tags:3",
	"pause:3.9",
}

func config(t *testing.T, ref string) *v1.ConfigFile {
	t.Helper()
	img, ok := pulled[ref]
	if !ok {
		t.Fatalf("image %s not in the registry", ref)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

func digest(t *testing.T, ref string) v1.Hash {
	t.Helper()
	d, err := pulled[ref].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCritestReferencesServed(t *testing.T) {
	for _, ref := range critestRefs {
		cf := config(t, ref)
		if cf.OS != "linux" || cf.Architecture == "" {
			t.Errorf("%s: platform %s/%s", ref, cf.OS, cf.Architecture)
		}
	}
	// One image under several names, and distinct images where critest
	// counts them.
	same := func(a, b string, want bool) {
		if got := digest(t, a) == digest(t, b); got != want {
			t.Errorf("%s and %s same image = %v, want %v", a, b, got, want)
		}
	}
	s := "k8s-staging-cri-tools/"
	same(s+"test-image-tags:1", s+"test-image-tags:2", true)
	same(s+"test-image-tags:1", s+"test-image-tags:3", true)
	same(s+"test-image-1:latest", s+"test-image-2:latest", false)
	same(s+"test-image-2:latest", s+"test-image-3:latest", false)
	same(s+"test-image-1:latest", s+"test-image-3:latest", false)
	same(s+"test-image-tag:test", s+"test-image-tag:all", false)
	same("pause:3.9", "pause:3.10", false)
}

// buildAll builds critest's images and the node e2e suite's.
func buildAll(in NodeInputs) ([]Tagged, error) {
	critest, err := Build(in.Inputs)
	if err != nil {
		return nil, err
	}
	node, err := BuildNode(in)
	return append(critest, node...), err
}

func TestBuildIsDeterministic(t *testing.T) {
	again, err := buildAll(inputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != len(pulled) {
		t.Fatalf("second build: %d images, first: %d", len(again), len(pulled))
	}
	for _, img := range again {
		d, err := img.Image.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if want := digest(t, img.Ref); d != want {
			t.Errorf("%s: digest %s, first build %s", img.Ref, d, want)
		}
	}
}

func TestConfigs(t *testing.T) {
	for _, c := range []struct {
		ref             string
		user            string
		entrypoint, cmd []string
		env             string // one variable that must be set
	}{
		{ref: "e2e-test-images/busybox:1.29-2", cmd: []string{"sh"}, env: "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		{ref: "e2e-test-images/nginx:1.14-2", cmd: []string{"nginx", "-g", "daemon off;"}, env: "WEBSRV_PORT=80"},
		{ref: "k8s-staging-cri-tools/hostnet-nginx-amd64:latest", cmd: []string{"nginx", "-g", "daemon off;"}, env: "WEBSRV_PORT=12003"},
		{ref: "e2e-test-images/httpd:2.4.39-4", cmd: []string{"httpd", "-DFOREGROUND"}, env: "WEBSRV_NAME=httpd"},
		{ref: "e2e-test-images/nonewprivs:1.3", user: "1000", entrypoint: []string{"/usr/local/bin/nnp"}},
		{ref: "k8s-staging-cri-tools/test-image-user-uid:latest", user: "1002", cmd: []string{"sh"}},
		{ref: "k8s-staging-cri-tools/test-image-user-username:latest", user: "www-data", cmd: []string{"sh"}},
		{ref: "k8s-staging-cri-tools/test-image-user-uid-group:latest", user: "1003:1004", cmd: []string{"sh"}},
		{ref: "k8s-staging-cri-tools/test-image-user-username-group:latest", user: "www-data:1004", cmd: []string{"sh"}},
		{ref: "k8s-staging-cri-tools/test-image-predefined-group:latest", user: "1000", cmd: []string{"sh"}},
		{ref: "k8s-staging-cri-tools/test-image-tag:test", cmd: []string{"sh"}},
		{ref: "pause:3.9", user: "65535:65535", entrypoint: []string{"/pause"}},
		{ref: "pause:3.10", user: "65535:65535", entrypoint: []string{"/pause"}},
	} {
		cf := config(t, c.ref).Config
		if cf.User != c.user || !slices.Equal(cf.Entrypoint, c.entrypoint) || !slices.Equal(cf.Cmd, c.cmd) {
			t.Errorf("%s: User %q Entrypoint %q Cmd %q; want %q %q %q", c.ref, cf.User, cf.Entrypoint, cf.Cmd, c.user, c.entrypoint, c.cmd)
		}
		if c.env != "" && !slices.Contains(cf.Env, c.env) {
			t.Errorf("%s: Env %q lacks %q", c.ref, cf.Env, c.env)
		}
	}
}

// entries lists the flattened file system of an image by path.
func entries(t *testing.T, ref string) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(pulled[ref])
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Clean("/"+h.Name), "/")] = h
	}
}

func TestBusyboxAppletsAreHardLinks(t *testing.T) {
	fs := entries(t, "e2e-test-images/busybox:1.29-2")
	if h := fs["/bin/busybox"]; h == nil || h.Typeflag != tar.TypeReg {
		t.Fatalf("/bin/busybox: %+v", h)
	}
	if h := fs["/bin/sh"]; h == nil || h.Typeflag != tar.TypeReg {
		t.Fatalf("/bin/sh: %+v", h)
	}
	// The commands critest runs in the busybox image.
	for _, a := range []string{"echo", "sleep", "top", "cat", "ls", "id", "hostname", "ping", "brctl", "netstat",
		"mount", "touch", "chmod", "grep", "seq", "sync", "mkdir", "pidof", "setpriv", "ash", "ipcs"} {
		h := fs["/bin/"+a]
		if h == nil {
			t.Errorf("/bin/%s missing", a)
			continue
		}
		if h.Typeflag != tar.TypeLink {
			t.Errorf("/bin/%s: type %c, want a hard link", a, h.Typeflag)
		}
		if h.Mode&0o7777 != 0o755 {
			t.Errorf("/bin/%s: link entry mode %o, want its target's 0755 (containerd applies it to the inode)", a, h.Mode)
		}
	}
	if h := fs["/bin/pgrep"]; h == nil || h.Typeflag != tar.TypeReg {
		t.Errorf("/bin/pgrep: %+v", h)
	}
	for p, h := range fs {
		if h.Typeflag == tar.TypeSymlink {
			t.Errorf("%s is a symlink to %s", p, h.Linkname)
		}
	}
	if h := fs["/tmp"]; h == nil || h.Mode&0o7777 != 0o1777 {
		t.Errorf("/tmp: %+v", h)
	}
}

func TestNoNewPrivsProgramIsSetuidRoot(t *testing.T) {
	h := entries(t, "e2e-test-images/nonewprivs:1.3")["/usr/local/bin/nnp"]
	if h == nil || h.Mode&0o7777 != 0o4755 || h.Uid != 0 {
		t.Fatalf("nnp: %+v", h)
	}
}

// rootfs unpacks an image into a temporary directory.
func rootfs(t *testing.T, ref string) string {
	t.Helper()
	dir := t.TempDir()
	rc := mutate.Extract(pulled[ref])
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err == nil {
				_, err = io.Copy(f, tr)
				err = errors.Join(err, f.Close())
			}
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, filepath.Clean("/"+h.Linkname)), p)
		default:
			t.Fatalf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
		if err == nil && h.Typeflag != tar.TypeLink {
			// Chown before chmod: chown clears the setuid bit.
			err = errors.Join(os.Lchown(p, h.Uid, h.Gid), os.Chmod(p, os.FileMode(h.Mode&0o777)|modeBits(h.Mode)))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func modeBits(m int64) os.FileMode {
	var out os.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

// inImage prepares a command run chrooted in root, as the image's user.
func inImage(root string, uid, gid uint32, env []string, argv ...string) *exec.Cmd {
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Env: env, Dir: "/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd
}

func run(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, err error) {
	t.Helper()
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

var pathEnvList = []string{pathEnv}

func TestShellExecsAppletFiles(t *testing.T) {
	root := rootfs(t, "e2e-test-images/busybox:1.29-2")
	out, errOut, err := run(t, inImage(root, 0, 0, pathEnvList, "/bin/sh", "-c", "ls /"))
	if err != nil || !strings.Contains(out, "bin\n") || errOut != "" {
		t.Fatalf("sh -c 'ls /': %v %q %q", err, out, errOut)
	}
	// A runtime masks /bin/ls by mounting /dev/null over it; a file that
	// cannot be executed has the same effect. The shell must try the file,
	// not run its own ls.
	if err := os.Remove(filepath.Join(root, "bin/ls")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/ls"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = run(t, inImage(root, 0, 0, pathEnvList, "/bin/sh", "-c", "ls"))
	if err == nil || errOut != "/bin/sh: ls: Permission denied\n" {
		t.Fatalf("masked ls: err %v, stderr %q", err, errOut)
	}
}

func TestUsers(t *testing.T) {
	root := rootfs(t, "e2e-test-images/busybox:1.29-2")
	for _, c := range []struct {
		uid  uint32
		want string
	}{{65534, "nobody\n"}, {33, "www-data\n"}, {0, "root\n"}} {
		out, _, err := run(t, inImage(root, c.uid, c.uid, pathEnvList, "/bin/id", "-nu"))
		if err != nil || out != c.want {
			t.Errorf("id -nu as %d: %q %v, want %q", c.uid, out, err, c.want)
		}
	}
	root = rootfs(t, "k8s-staging-cri-tools/test-image-predefined-group:latest")
	out, _, err := run(t, inImage(root, 0, 0, pathEnvList, "/bin/id", "-G", "default-user"))
	if err != nil || out != "1000 50000\n" {
		t.Errorf("id -G default-user: %q %v", out, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "home/default-user")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 1000 {
		t.Errorf("/home/default-user: %v", err)
	}
}

func TestNoNewPrivsProgram(t *testing.T) {
	root := rootfs(t, "e2e-test-images/nonewprivs:1.3")
	out, errOut, err := run(t, inImage(root, 1000, 1000, pathEnvList, "/usr/local/bin/nnp"))
	if err != nil || out != "Effective uid: 0\n" {
		t.Errorf("nnp as uid 1000: %q %q %v", out, errOut, err)
	}
	out, errOut, err = run(t, inImage(root, 1000, 1000, pathEnvList, "/bin/setpriv", "--nnp", "/usr/local/bin/nnp"))
	if err != nil || out != "Effective uid: 1000\n" {
		t.Errorf("nnp under no_new_privs: %q %q %v", out, errOut, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startImage runs the image's default command chrooted in root, its port
// variable replaced by a free port (the host's 80 may be taken).
func startImage(t *testing.T, ref, root string) (*exec.Cmd, int, *strings.Builder) {
	t.Helper()
	cf := config(t, ref).Config
	port := freePort(t)
	var env []string
	for _, e := range cf.Env {
		if strings.HasPrefix(e, "WEBSRV_PORT=") {
			e = "WEBSRV_PORT=" + strconv.Itoa(port)
		}
		env = append(env, e)
	}
	argv := append(slices.Clone(cf.Entrypoint), cf.Cmd...)
	// Resolve the command as a runtime does: through the image's PATH.
	for _, d := range []string{"/usr/local/apache2/bin", "/usr/sbin", "/bin"} {
		if _, err := os.Stat(filepath.Join(root, d, argv[0])); err == nil {
			argv[0] = d + "/" + argv[0]
			break
		}
	}
	cmd := inImage(root, 0, 0, env, argv...)
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, port, logs
}

func get(t *testing.T, port int) int {
	t.Helper()
	for range 100 {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			resp.Body.Close()
			return resp.StatusCode
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("web server on port %d never answered", port)
	return 0
}

func stopWithSIGTERM(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

func TestNginxStandIn(t *testing.T) {
	ref := "e2e-test-images/nginx:1.14-2"
	root := rootfs(t, ref)
	cmd, port, _ := startImage(t, ref, root)
	if code := get(t, port); code != http.StatusOK {
		t.Errorf("GET /: %d", code)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	pidFile, err := os.ReadFile(filepath.Join(root, "var/run/nginx.pid"))
	if err != nil || strings.TrimSpace(string(pidFile)) != pid {
		t.Errorf("nginx.pid %q (%v), want %s", pidFile, err, pid)
	}
	comm, _ := os.ReadFile("/proc/" + pid + "/comm")
	cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
	if string(comm) != "nginx\n" || !strings.Contains(string(cmdline), "master process") {
		t.Errorf("comm %q cmdline %q", comm, cmdline)
	}
	stopWithSIGTERM(t, cmd)
}

func TestHttpdStandIn(t *testing.T) {
	ref := "e2e-test-images/httpd:2.4.39-4"
	cmd, port, logs := startImage(t, ref, rootfs(t, ref))
	if code := get(t, port); code != http.StatusOK {
		t.Errorf("GET /: %d", code)
	}
	stopWithSIGTERM(t, cmd)
	if !strings.Contains(logs.String(), "httpd") {
		t.Errorf("log %q does not mention httpd", logs)
	}
}

func TestPauseExitsOnSIGTERMAsPID1(t *testing.T) {
	ref := "pause:3.9"
	cmd := inImage(rootfs(t, ref), 65535, 65535, nil, "/pause")
	cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Let it install its handlers: PID 1 ignores signals it has none for.
	time.Sleep(200 * time.Millisecond)
	stopWithSIGTERM(t, cmd)
}

func TestPgrep(t *testing.T) {
	root := rootfs(t, "e2e-test-images/busybox:1.29-2")
	cmd := inImage(root, 0, 0, pathEnvList, "/bin/sh", "-c",
		"mount -t proc proc /proc && mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && { sleep 30 & usleep 200000; pgrep sleep; echo rc=$?; pgrep nomatch; echo rc=$?; kill $!; }")
	cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
	out, errOut, err := run(t, cmd)
	if err != nil || errOut != "" {
		t.Fatalf("%v %q", err, errOut)
	}
	lines := strings.Fields(out)
	if len(lines) != 3 || lines[1] != "rc=0" || lines[2] != "rc=1" {
		t.Fatalf("pgrep output %q", out)
	}
	if _, err := strconv.Atoi(lines[0]); err != nil {
		t.Errorf("pgrep sleep printed %q", lines[0])
	}
}

func TestIpcs(t *testing.T) {
	id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.SysvShmCtl(id, unix.IPC_RMID, nil) })
	root := rootfs(t, "e2e-test-images/busybox:1.29-2")
	ipcs := func(flags uintptr) string {
		cmd := inImage(root, 0, 0, pathEnvList, "/bin/sh", "-c", "mount -t proc proc /proc && ipcs -m")
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID | flags
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
		out, errOut, err := run(t, cmd)
		if err != nil {
			t.Fatalf("ipcs -m: %v %q", err, errOut)
		}
		return out
	}
	if out := ipcs(0); !slices.Contains(strings.Fields(out), strconv.Itoa(id)) {
		t.Errorf("host IPC namespace: segment %d not in %q", id, out)
	}
	// critest looks for the segment ID as a substring: an empty list must
	// print no digit at all.
	if out := ipcs(syscall.CLONE_NEWIPC); strings.ContainsAny(out, "0123456789") {
		t.Errorf("new IPC namespace: %q", out)
	}
}

// The references the PR-gating NodeConformance specs of the node e2e suite
// (k8s.io/kubernetes v1.37.2) pull, without registry.k8s.io.
var nodeRefs = []string{
	"e2e-test-images/busybox:1.37.0-2", "e2e-test-images/busybox:1.36.1-1", "e2e-test-images/nonroot:1.5",
	"e2e-test-images/glibc-dns-testing:2.1.1", "e2e-test-images/nginx:1.27.0-2", "e2e-test-images/nonewprivs:1.4",
	"e2e-test-images/agnhost:2.66.1", "e2e-test-images/agnhost:2.55", "pause:3.10.2",
}

func TestNodeReferencesServed(t *testing.T) {
	for _, ref := range nodeRefs {
		if cf := config(t, ref); cf.OS != "linux" {
			t.Errorf("%s: os %q", ref, cf.OS)
		}
	}
	if digest(t, "e2e-test-images/agnhost:2.66.1") == digest(t, "e2e-test-images/agnhost:2.55") {
		t.Error("the two agnhost versions are one image: a pod updated from one to the other would not change image")
	}
	if c := config(t, "e2e-test-images/agnhost:2.66.1").Config; strings.Join(c.Entrypoint, " ") != "/agnhost" || strings.Join(c.Cmd, " ") != "pause" {
		t.Errorf("agnhost entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	if u := config(t, "e2e-test-images/nonroot:1.5").Config.User; u != "1234" {
		t.Errorf("nonroot user %q", u)
	}
}

// TestNodeShell runs what the node e2e specs need of the busybox stand-in's
// shell: environment names that are not identifiers reach the programs it
// starts, and nmeter timestamps lines with milliseconds.
func TestNodeShell(t *testing.T) {
	root := rootfs(t, "e2e-test-images/busybox:1.37.0-2")
	out, errOut, err := run(t, inImage(root, 0, 0, append([]string{"data-1=value-1"}, pathEnvList...), "/bin/sh", "-c", "env"))
	if err != nil || !strings.Contains(out, "data-1=value-1\n") {
		t.Errorf("sh -c env: %v %q %q, want data-1=value-1 kept", err, out, errOut)
	}
	out, errOut, err = run(t, inImage(root, 0, 0, pathEnvList, "/bin/sh", "-c", "date -u +%FT$(nmeter -d0 '%3t' | head -n1)Z"))
	if err != nil || !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n$`).MatchString(out) {
		t.Errorf("timestamp: %v %q %q", err, out, errOut)
	}
}

// TestAgnhostTools: agnhost's nc speaks UDP (-u), which netexec uses, and
// curl runs, for the suite's networking checks and exec hooks.
func TestAgnhostTools(t *testing.T) {
	root := rootfs(t, "e2e-test-images/agnhost:2.66.1")
	_, errOut, _ := run(t, inImage(root, 0, 0, pathEnvList, "/bin/sh", "-c", "nc -h"))
	if !strings.Contains(errOut, "OpenBSD netcat") || !strings.Contains(errOut, "-u") {
		t.Errorf("nc -h: %q", errOut)
	}
	if out, errOut, err := run(t, inImage(root, 0, 0, pathEnvList, "/bin/sh", "-c", "curl --version")); err != nil || !strings.HasPrefix(out, "curl ") {
		t.Errorf("curl --version: %v %q %q", err, out, errOut)
	}
	for _, f := range []string{"agnhost-2", "localhost.crt", "localhost.key"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestAgnhostFakeRegistry: agnhost carries pause:testing where its
// fake-registry-server looks (the private-registry specs pull it), a tag
// file naming a manifest whose config and layers are there too.
func TestAgnhostFakeRegistry(t *testing.T) {
	root := filepath.Join(rootfs(t, "e2e-test-images/agnhost:2.66.1"), "var/registry/pause")
	data := func(kind, digest string) []byte {
		algo, hex, _ := strings.Cut(strings.TrimSpace(digest), ":")
		if len(hex) < 2 {
			t.Fatalf("digest %q", digest)
		}
		b, err := os.ReadFile(filepath.Join(root, kind, algo, hex[:2], hex, "data"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tag, err := os.ReadFile(filepath.Join(root, "manifests/testing"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		MediaType string
		Config    struct{ Digest string }
		Layers    []struct{ Digest string }
	}
	if err := json.Unmarshal(data("manifests", string(tag)), &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType == "" || len(m.Layers) == 0 {
		t.Fatalf("manifest: %+v", m)
	}
	data("blobs", m.Config.Digest)
	for _, l := range m.Layers {
		data("blobs", l.Digest)
	}
}
