package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// richImage has three layers exercising what unpacking must get right:
// owners, modes, setuid, xattrs, hard and symbolic links, a whiteout and
// an opaque directory.
func richImage(t *testing.T) v1.Image {
	base := layer(t,
		dir("bin"), dir("etc"), dir("data"), dir("data/old"), dir("opq"),
		entry{name: "bin/tool", body: "#!/bin/sh\necho tool\n", typ: tar.TypeReg, mode: 0o4755},
		entry{name: "bin/alias", link: "bin/tool", typ: tar.TypeLink},
		entry{name: "bin/sh", link: "tool", typ: tar.TypeSymlink, mode: 0o777},
		entry{name: "etc/owned", body: "mine", typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1001},
		entry{name: "etc/attr", body: "x", typ: tar.TypeReg, mode: 0o644, xattrs: map[string]string{"user.note": "kept"}},
		file("data/gone", "deleted above"),
		file("data/old/file", "old"),
		file("opq/hidden", "hidden by the opaque dir above"),
	)
	middle := layer(t,
		dir("data"), file("data/.wh.gone", ""),
		dir("opq"), file("opq/.wh..wh..opq", ""), file("opq/new", "new"),
		file("etc/replaced", "first"),
	)
	top := layer(t,
		dir("etc"), file("etc/replaced", "second"),
		entry{name: "data/old", typ: tar.TypeDir, mode: 0o700, uid: 7, gid: 8},
	)
	return imageOf(t, base, middle, top)
}

// TestRootfsMatchesFlatten pulls an image and compares the container's
// overlay root file by file with go-containerregistry's flatten (crane export).
func TestRootfsMatchesFlatten(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	img := richImage(t)
	reg.push(t, "rich:1", img)
	s := openStore(t, reg, Options{})
	got := pull(t, s, reg.host+"/rich:1")
	root := mountRootfs(t, s, "ctr1", got.ID)

	seen := map[string]bool{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Clean(hdr.Name), "/")
		seen[name] = true
		p := filepath.Join(root, name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if int(st.Uid) != hdr.Uid || int(st.Gid) != hdr.Gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, hdr.Uid, hdr.Gid)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if st.Mode&unix.S_IFMT != unix.S_IFDIR || int64(st.Mode&0o7777) != hdr.Mode&0o7777 {
				t.Errorf("%s: mode %o, want dir %o", name, st.Mode, hdr.Mode)
			}
		case tar.TypeReg:
			data, err := os.ReadFile(p)
			if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int64(st.Mode&0o7777) != hdr.Mode&0o7777 {
				t.Errorf("%s: mode %o err %v, want file %o", name, st.Mode, err, hdr.Mode)
			}
			want, _ := io.ReadAll(tr)
			if !bytes.Equal(data, want) {
				t.Errorf("%s: content %q, want %q", name, data, want)
			}
		case tar.TypeSymlink:
			if target, err := os.Readlink(p); err != nil || target != hdr.Linkname {
				t.Errorf("%s: link %q %v, want %q", name, target, err, hdr.Linkname)
			}
		case tar.TypeLink:
			var target unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, hdr.Linkname), &target); err != nil || target.Ino != st.Ino {
				t.Errorf("%s: not a hard link of %s", name, hdr.Linkname)
			}
		}
	}
	if len(seen) < 10 {
		t.Fatalf("flatten yielded only %d entries", len(seen))
	}
	// Nothing more than flatten has: whiteouts and opaque-hidden files are gone.
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		if rel, _ := filepath.Rel(root, p); !seen[rel] {
			t.Errorf("rootfs has %s, flatten does not", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := unix.Lgetxattr(filepath.Join(root, "etc/attr"), "user.note", make([]byte, 16)); err != nil || v != 4 {
		t.Errorf("xattr user.note: %d %v", v, err)
	}
	// The rootfs is writable and the writes stay in the container's layer.
	if err := os.WriteFile(filepath.Join(root, "etc/owned"), []byte("changed"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := mountRootfs(t, s, "ctr2", got.ID)
	if data, _ := os.ReadFile(filepath.Join(other, "etc/owned")); string(data) != "mine" {
		t.Errorf("second container sees %q: writes leaked into the shared layer", data)
	}
}

func TestPullNamesAndLookup(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	img := imageOf(t, layer(t, file("a", "1")))
	reg.push(t, "app:v1", img)
	s := openStore(t, reg, Options{})
	got := pull(t, s, reg.host+"/app:v1")
	want, _ := img.ConfigName()
	if got.ID != want.String() {
		t.Fatalf("ID %s, want the config digest %s", got.ID, want)
	}
	digest, _ := img.Digest()
	if len(got.RepoTags) != 1 || got.RepoTags[0] != reg.host+"/app:v1" ||
		len(got.RepoDigests) != 1 || got.RepoDigests[0] != reg.host+"/app@"+digest.String() {
		t.Fatalf("names %v %v", got.RepoTags, got.RepoDigests)
	}
	for _, ref := range []string{got.ID, got.ID[7:19], reg.host + "/app:v1", got.RepoDigests[0]} {
		if img, err := s.Get(ref); err != nil || img.ID != got.ID {
			t.Errorf("Get(%s) = %v, %v", ref, img, err)
		}
	}
	if _, err := s.Get(reg.host + "/app:v2"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get of an unknown tag: %v, want NotFound", err)
	}
	// Pull by digest adds no tag and reuses the image.
	byDigest := pull(t, s, got.RepoDigests[0])
	if byDigest.ID != got.ID || len(byDigest.RepoTags) != 1 {
		t.Errorf("pull by digest: %+v", byDigest)
	}
	// An unknown digest is NotFound.
	_, err := s.Pull(context.Background(), reg.host+"/app@sha256:"+strings.Repeat("0", 64), PullOptions{})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("pull of an unknown digest: %v, want NotFound", err)
	}
	if got.Size == 0 || got.Config.Config.Cmd[0] != "/bin/sh" {
		t.Errorf("size %d config %+v", got.Size, got.Config.Config)
	}
}

func TestParseReferenceNormalises(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                      "docker.io/library/busybox:latest",
		"busybox:1.36":                 "docker.io/library/busybox:1.36",
		"user/app":                     "docker.io/user/app:latest",
		"registry.k8s.io/pause:3.9":    "registry.k8s.io/pause:3.9",
		"localhost:5000/x":             "localhost:5000/x:latest",
		"index.docker.io/library/x:1":  "docker.io/library/x:1",
		"x:tag@sha256:" + zeros64:      "docker.io/library/x@sha256:" + zeros64,
		"h:5000/x@sha256:" + zeros64:   "h:5000/x@sha256:" + zeros64,
		"h:5000/x:t@sha256:" + zeros64: "h:5000/x@sha256:" + zeros64,
	} {
		r, err := ParseReference(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseReference(%q) = %q, %v; want %q", in, r.String(), err, want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "x@sha256:short"} {
		if _, err := ParseReference(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseReference(%q): %v, want InvalidArgument", bad, err)
		}
	}
}

var zeros64 = strings.Repeat("0", 64)

func TestPullSelectsPlatformFromIndex(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	amd := imageOf(t, layer(t, file("arch", "amd64")))
	arm := imageOf(t, layer(t, file("arch", "arm64")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref := reg.host + "/multi:1"
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, reg, Options{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
	got := pull(t, s, ref)
	want, _ := amd.ConfigName()
	if got.ID != want.String() {
		t.Errorf("picked %s, want the amd64 image %s", got.ID, want)
	}
	idxDigest, _ := idx.Digest()
	if got.RepoDigests[0] != reg.host+"/multi@"+idxDigest.String() {
		t.Errorf("repo digest %s, want the index's %s", got.RepoDigests[0], idxDigest)
	}
	// A pull's own platform (from the CRI's annotations) wins over the store's.
	asked, err := PlatformFromAnnotations(map[string]string{PlatformAnnotation: "linux/arm64/v8"})
	if err != nil {
		t.Fatal(err)
	}
	armImg, err := s.Pull(context.Background(), ref, PullOptions{Platform: asked})
	if wantArm, _ := arm.ConfigName(); err != nil || armImg.ID != wantArm.String() {
		t.Errorf("pull for linux/arm64/v8: %v %v, want the arm64 image %s", armImg, err, wantArm)
	}
	// The list's tag and digest now name the arm64 image only.
	if amdNow, err := s.Get(got.ID); err != nil || len(amdNow.RepoTags)+len(amdNow.RepoDigests) != 0 {
		t.Errorf("the amd64 image after the arm64 pull: %v %v, want its names moved", amdNow, err)
	}
	s390 := openStore(t, reg, Options{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}})
	if _, err := s390.Pull(context.Background(), ref, PullOptions{}); err == nil {
		t.Error("pull for a platform the index lacks succeeded")
	}
}

func TestPullWithBasicAuth(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.user, reg.pass = "alice", "s3cret"
	reg.push(t, "private:1", imageOf(t, layer(t, file("a", "1"))))
	s := openStore(t, reg, Options{})
	_, err := s.Pull(context.Background(), reg.host+"/private:1", PullOptions{})
	if !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Fatalf("pull without credentials: %v, want Unauthenticated", err)
	}
	_, err = s.Pull(context.Background(), reg.host+"/private:1", PullOptions{Auth: &authn.AuthConfig{Username: "alice", Password: "wrong"}})
	if !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Fatalf("pull with a wrong password: %v, want Unauthenticated", err)
	}
	if _, err := s.Pull(context.Background(), reg.host+"/private:1", PullOptions{Auth: &authn.AuthConfig{Username: "alice", Password: "s3cret"}}); err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
}

func TestCorruptBlobFailsAndLeavesNothing(t *testing.T) {
	reg := newTestRegistry(t)
	l := layer(t, file("big", strings.Repeat("x", 4096)))
	reg.push(t, "bad:1", imageOf(t, l))
	d, _ := l.Digest()
	reg.corrupt[d.String()] = true
	s := openStore(t, reg, Options{})
	_, err := s.Pull(context.Background(), reg.host+"/bad:1", PullOptions{})
	if err == nil {
		t.Fatal("pull of a corrupted blob succeeded")
	}
	if !strings.Contains(err.Error(), "digest") {
		t.Errorf("error does not say what is wrong: %v", err)
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("images after a failed pull: %v", imgs)
	}
	if dirs := layerDirs(t, s); len(dirs) != 0 {
		t.Errorf("layers after a failed pull: %v", dirs)
	}
	assertEmptyDir(t, filepath.Join(s.root, "tmp"))
	if n := reg.blobGets(d.String()); n != 1 {
		t.Errorf("a blob that arrived whole but wrong was fetched %d times; want 1 (no retry)", n)
	}
}

func TestConcurrentPullsFetchEachLayerOnce(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	shared := layer(t, file("shared", strings.Repeat("s", 1<<20)))
	reg.push(t, "one:1", imageOf(t, shared, layer(t, file("one", "1"))))
	reg.push(t, "two:1", imageOf(t, shared, layer(t, file("two", "2"))))
	s := openStore(t, reg, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, ref := range []string{"one:1", "two:1", "one:1", "two:1"} {
		wg.Go(func() {
			_, err := s.Pull(context.Background(), reg.host+"/"+ref, PullOptions{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	d, _ := shared.Digest()
	if n := reg.blobGets(d.String()); n != 1 {
		t.Errorf("shared layer downloaded %d times, want 1", n)
	}
	if dirs := layerDirs(t, s); len(dirs) != 3 {
		t.Errorf("%d layer directories, want 3 (one shared)", len(dirs))
	}
}

func TestMirrorKeepsOriginalName(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	img := imageOf(t, layer(t, file("m", "mirrored")))
	reg.push(t, "library/busybox:1.36", img)
	reg.push(t, "pause:3.9", img)
	s := openStore(t, nil, Options{Mirrors: map[string]string{"docker.io": "http://" + reg.host, "registry.k8s.io": "http://" + reg.host},
		ShortNames: ShortNames{Search: []string{"docker.io"}}})
	for ref, want := range map[string]string{"busybox:1.36": "docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.9": "registry.k8s.io/pause:3.9"} {
		got := pull(t, s, ref)
		found := false
		for _, tag := range got.RepoTags {
			found = found || tag == want
			if strings.Contains(tag, reg.host) {
				t.Errorf("tag %s names the mirror", tag)
			}
		}
		if !found {
			t.Errorf("pull %s: tags %v, want %s", ref, got.RepoTags, want)
		}
		if !strings.Contains(strings.Join(got.RepoDigests, " "), strings.Split(want, ":")[0]+"@sha256:") {
			t.Errorf("pull %s: digests %v", ref, got.RepoDigests)
		}
	}
}

func TestPlainHTTPOnlyWhenAllowed(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "x:1", imageOf(t, layer(t, file("a", "1"))))
	s := openStore(t, nil, Options{})
	_, err := s.Pull(context.Background(), reg.host+"/x:1", PullOptions{})
	if err == nil || !strings.Contains(err.Error(), "--insecure-registry") {
		t.Fatalf("pull from an undeclared plain-HTTP registry: %v", err)
	}
}

func TestStalledPullIsCancelled(t *testing.T) {
	reg := newTestRegistry(t)
	l := layer(t, file("a", "1"))
	reg.push(t, "slow:1", imageOf(t, l))
	d, _ := l.Digest()
	reg.stall[d.String()] = make(chan struct{})
	s := openStore(t, reg, Options{StallTimeout: 500 * time.Millisecond})
	_, err := s.Pull(context.Background(), reg.host+"/slow:1", PullOptions{})
	if !errors.Is(err, errdefs.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "no progress") {
		t.Fatalf("stalled pull: %v, want a stall DeadlineExceeded", err)
	}
	assertEmptyDir(t, filepath.Join(s.root, "tmp"))
}

// pullInChild, in the child process a test starts with startPull, opens
// the store and pulls, which the test means to hang; it reports whether
// this is that child.
func pullInChild(t *testing.T) bool {
	if os.Getenv("IMAGE_TEST_PULL_ROOT") == "" {
		return false
	}
	s, err := Open(os.Getenv("IMAGE_TEST_PULL_ROOT"), Options{InsecureRegistries: []string{os.Getenv("IMAGE_TEST_REGISTRY")}, Keychain: noKeychain{}})
	if err == nil {
		_, err = s.Pull(context.Background(), os.Getenv("IMAGE_TEST_REF"), PullOptions{})
	}
	t.Fatalf("the pull was meant to hang: %v", err)
	return true
}

// startPull starts a process (this test binary running test, which calls
// pullInChild) pulling ref from reg into the store at root.
func startPull(t *testing.T, test string, reg *testRegistry, root, ref string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), "IMAGE_TEST_PULL_ROOT="+root, "IMAGE_TEST_REGISTRY="+reg.host, "IMAGE_TEST_REF="+reg.host+"/"+ref)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestKilledPullLeavesNoImage kills a process in the middle of a pull (its
// second layer hangs) and checks the store on reopening: no image, the
// half-unpacked layer is collected, and the next pull completes.
func TestKilledPullLeavesNoImage(t *testing.T) {
	roottest.Require(t)
	if pullInChild(t) {
		return
	}
	reg := newTestRegistry(t)
	first := layer(t, file("first", "1"))
	second := layer(t, file("second", "2"))
	reg.push(t, "killed:1", imageOf(t, first, second))
	d, _ := second.Digest()
	reg.stall[d.String()] = make(chan struct{})
	root := t.TempDir()
	cmd := startPull(t, "TestKilledPullLeavesNoImage", reg, root, "killed:1")
	deadline := time.Now().Add(30 * time.Second)
	for reg.blobGets(d.String()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let the first layer land
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(reg.stall[d.String()])
	delete(reg.stall, d.String())

	s, err := Open(root, Options{InsecureRegistries: []string{reg.host}, Keychain: noKeychain{}, CollectGarbage: true})
	if err != nil {
		t.Fatal(err)
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("a killed pull left images: %v", imgs)
	}
	assertEmptyDir(t, filepath.Join(root, "tmp"))
	if dirs := layerDirs(t, s); len(dirs) != 0 {
		t.Errorf("a killed pull left layers nothing uses: %v", dirs)
	}
	if img := pull(t, s, reg.host+"/killed:1"); len(img.Layers) != 2 {
		t.Errorf("pull after the crash: %+v", img)
	}
}

// TestKilledPullDebrisCollectedAtFirstStart: a process is killed (SIGKILL)
// while it pulls a large layer from a registry that stops sending half way,
// with tens of MiB of the layer unpacked; the store is opened again (as
// the daemon's next start does) while the killed process is still
// unreaped, as when its parent has not waited for it yet, or its pid
// belongs to another process by then. The debris is gone after that first
// start, and the complete image pulled before is untouched.
func TestKilledPullDebrisCollectedAtFirstStart(t *testing.T) {
	roottest.Require(t)
	if pullInChild(t) {
		return
	}
	reg := newTestRegistry(t)
	reg.push(t, "kept:1", imageOf(t, layer(t, file("kept", "whole"))))
	// 96 MiB of zeros: large unpacked, tiny compressed, so half the
	// blob unpacks to about half of it.
	big := layer(t, file("zeros", string(make([]byte, 96<<20))))
	reg.push(t, "big:1", imageOf(t, big))
	d, _ := big.Digest()
	size, _ := big.Size()
	reg.mu.Lock()
	reg.stallAt[d.String()] = size / 2
	reg.mu.Unlock()
	root := t.TempDir()
	opts := Options{InsecureRegistries: []string{reg.host}, Keychain: noKeychain{}}
	first, err := Open(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	kept := pull(t, first, reg.host+"/kept:1")

	cmd := startPull(t, "TestKilledPullDebrisCollectedAtFirstStart", reg, root, "big:1")
	tmp := filepath.Join(root, "tmp")
	deadline := time.Now().Add(time.Minute)
	for {
		if debris, _ := diskUsage(tmp); debris >= 32<<20 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the pull never unpacked 32 MiB")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	waitDead(t, cmd.Process.Pid)

	opts.CollectGarbage = true
	s, err := Open(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		debris, _ := diskUsage(tmp)
		t.Errorf("%d bytes of the killed pull survived the first start in %d entries", debris, len(entries))
	}
	got, err := s.Get(reg.host + "/kept:1")
	if err != nil || got.ID != kept.ID {
		t.Fatalf("the complete image after the collection: %+v %v", got, err)
	}
	if dirs := layerDirs(t, s); len(dirs) != 1 {
		t.Errorf("layers after the collection: %v, want the kept image's one", dirs)
	}
	if data, err := os.ReadFile(filepath.Join(mountRootfs(t, s, "kept", kept.ID), "kept")); err != nil || string(data) != "whole" {
		t.Errorf("the kept image's rootfs: %q %v", data, err)
	}
}

// TestScratchInUseNotCollected: a daemon starting while a live process (a
// `cri-mini image pull`) unpacks leaves its scratch directory alone.
func TestScratchInUseNotCollected(t *testing.T) {
	root := t.TempDir()
	cli, err := Open(root, Options{Keychain: noKeychain{}})
	if err != nil {
		t.Fatal(err)
	}
	dir, done, err := cli.scratchDir("layer")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "half"), []byte("unpacking"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, Options{Keychain: noKeychain{}, CollectGarbage: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "half")); err != nil {
		t.Errorf("the collection removed a scratch directory in use: %v", err)
	}
	done()
	assertEmptyDir(t, filepath.Join(root, "tmp"))
}

// waitDead waits until the killed process pid is dead and its files are
// closed (as a restarted daemon finds the old one once the run root's lock
// is free), but not reaped: a zombie whose pid is still taken.
func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := proc.ReadStat(pid)
		if err != nil {
			t.Fatal(err)
		}
		// The leader is a zombie as soon as it exits; the files, shared by
		// all threads, are closed once the last other thread has gone.
		threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if st.State == 'Z' && len(threads) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has not died after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRemoveTagsAndLayers(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	shared := layer(t, file("shared", "s"))
	imgA := imageOf(t, shared, layer(t, file("a", "a")))
	reg.push(t, "a:1", imgA)
	reg.push(t, "a:2", imgA)
	reg.push(t, "b:1", imageOf(t, shared, layer(t, file("b", "b"))))
	s := openStore(t, reg, Options{})
	a := pull(t, s, reg.host+"/a:1")
	pull(t, s, reg.host+"/a:2")
	b := pull(t, s, reg.host+"/b:1")
	if len(layerDirs(t, s)) != 3 {
		t.Fatalf("layers %v", layerDirs(t, s))
	}
	// One tag of two: the image stays with the other.
	if err := s.Remove(reg.host + "/a:1"); err != nil {
		t.Fatal(err)
	}
	if img, err := s.Get(a.ID); err != nil || len(img.RepoTags) != 1 || img.RepoTags[0] != reg.host+"/a:2" {
		t.Fatalf("after removing one tag: %+v %v", img, err)
	}
	// A container keeps b's layers alive after b is removed.
	root := mountRootfs(t, s, "ctr-b", b.ID)
	if err := s.Remove(b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(b.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("removed image still there: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(root, "b")); err != nil || string(data) != "b" {
		t.Errorf("container of a removed image lost its files: %q %v", data, err)
	}
	if len(layerDirs(t, s)) != 3 {
		t.Errorf("layers a container uses were removed: %v", layerDirs(t, s))
	}
	if err := s.ReleaseRootfs("ctr-b", root); err != nil {
		t.Fatal(err)
	}
	if len(layerDirs(t, s)) != 2 {
		t.Errorf("after the container went: layers %v, want a's two", layerDirs(t, s))
	}
	if err := s.Remove(reg.host + "/a:2"); err != nil {
		t.Fatal(err)
	}
	if dirs := layerDirs(t, s); len(dirs) != 0 {
		t.Errorf("layers left after removing every image: %v", dirs)
	}
	if err := s.Remove(a.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second remove: %v, want NotFound", err)
	}
	assertEmptyDir(t, filepath.Join(s.root, "containers"))
}

func TestFsInfoCountsImagesAndContainers(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "fs:1", imageOf(t, layer(t, file("a", strings.Repeat("a", 10000)), file("b", "b"))))
	s := openStore(t, reg, Options{})
	img := pull(t, s, reg.host+"/fs:1")
	root := mountRootfs(t, s, "ctr-fs", img.ID)
	if err := os.WriteFile(filepath.Join(root, "written"), bytes.Repeat([]byte("w"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	images, ctrs, err := s.FsInfo()
	if err != nil {
		t.Fatal(err)
	}
	if images.Bytes < 10000 || images.Inodes < 2 || images.Mountpoint == "" {
		t.Errorf("image usage %+v", images)
	}
	if ctrs.Bytes < 1<<20 || ctrs.Inodes < 1 || ctrs.Mountpoint == "" {
		t.Errorf("container usage %+v", ctrs)
	}
}

// TestTwoStoresShareOneDirectory is the daemon and `cri-mini image import`
// working on one store: each sees what the other recorded.
func TestTwoStoresShareOneDirectory(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "shared:1", imageOf(t, layer(t, file("a", "1"))))
	dir := t.TempDir()
	daemon, err := Open(dir, Options{InsecureRegistries: []string{reg.host}, Keychain: noKeychain{}, CollectGarbage: true})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Open(dir, Options{InsecureRegistries: []string{reg.host}, Keychain: noKeychain{}})
	if err != nil {
		t.Fatal(err)
	}
	img := pull(t, cli, reg.host+"/shared:1")
	if got, err := daemon.Get(reg.host + "/shared:1"); err != nil || got.ID != img.ID {
		t.Fatalf("daemon does not see the CLI's pull: %v", err)
	}
	if err := daemon.Remove(img.ID); err != nil {
		t.Fatal(err)
	}
	if imgs, _ := cli.List(); len(imgs) != 0 {
		t.Errorf("CLI still lists %v", imgs)
	}
}

func TestMountImageIsReadOnly(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "one:1", imageOf(t, layer(t, dir("etc"), file("etc/passwd", "root:x:0:0::/:/bin/sh\n"))))
	reg.push(t, "two:1", imageOf(t, layer(t, file("a", "1")), layer(t, file("b", "2"))))
	s := openStore(t, reg, Options{})
	for ref, want := range map[string]string{"one:1": "etc/passwd", "two:1": "b"} {
		img := pull(t, s, reg.host+"/"+ref)
		target := t.TempDir()
		id := "vol-" + strings.TrimSuffix(ref, ":1")
		if err := s.MountImage(id, img.ID, target, nil); err != nil {
			t.Fatalf("MountImage %s: %v", ref, err)
		}
		if _, err := os.Stat(filepath.Join(target, want)); err != nil {
			t.Errorf("%s: %v", ref, err)
		}
		if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: write into an image volume: %v, want EROFS", ref, err)
		}
		if err := s.ReleaseRootfs(id, target); err != nil {
			t.Fatal(err)
		}
		assertNotMounted(t, target)
	}
	assertEmptyDir(t, filepath.Join(s.root, "containers"))
}

// TestMountCopyWithoutOverlay is the root filesystem of hosts without
// overlayfs: the flattened layers, bind-mounted, read-only when asked.
func TestMountCopyWithoutOverlay(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "rich:1", richImage(t))
	s := openStore(t, reg, Options{})
	img := pull(t, s, reg.host+"/rich:1")
	overlay := mountRootfs(t, s, "ctr-overlay", img.ID)
	var layers []string
	for _, l := range img.Layers {
		layers = append(layers, s.layerDir(l))
	}
	target := t.TempDir()
	if err := mountCopy(layers, filepath.Join(t.TempDir(), "copy"), target, true, nil); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	for _, p := range []string{"bin/tool", "opq/new", "etc/replaced"} {
		want, _ := os.ReadFile(filepath.Join(overlay, p))
		if got, err := os.ReadFile(filepath.Join(target, p)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q %v, overlay has %q", p, got, err, want)
		}
	}
	for _, gone := range []string{"data/gone", "opq/hidden"} {
		if _, err := os.Lstat(filepath.Join(target, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s should be hidden: %v", gone, err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into a read-only copy: %v", err)
	}
}

// BenchmarkPrepareRootfs: mounting and releasing a container's root
// filesystem over images of 1, 10 and 50 layers (the layers are already
// unpacked; this is the per-container cost).
func BenchmarkPrepareRootfs(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("layers=%d", n), func(b *testing.B) {
			var layers []v1.Layer
			for i := range n {
				layers = append(layers, layer(b, file(fmt.Sprintf("f%d", i), strings.Repeat("x", 1000))))
			}
			s, err := Open(b.TempDir(), Options{Keychain: noKeychain{}})
			if err != nil {
				b.Fatal(err)
			}
			id, err := s.add(context.Background(), imageOf(b, layers...), []string{"bench.local/img:1"}, newPullWatch("bench", nil, s.metrics))
			if err != nil {
				b.Fatal(err)
			}
			target := b.TempDir()
			for b.Loop() {
				if err := s.PrepareRootfs("bench", id, target, nil); err != nil {
					b.Fatal(err)
				}
				if err := s.ReleaseRootfs("bench", target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPrepareRootfsTwice: a second rootfs for the same container is
// AlreadyExists and leaves the first one (mount and writable layer) alone.
func TestPrepareRootfsTwice(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "twice:1", imageOf(t, layer(t, file("a", "1"))))
	s := openStore(t, reg, Options{})
	img := pull(t, s, reg.host+"/twice:1")
	root := mountRootfs(t, s, "twice", img.ID)
	if err := os.WriteFile(filepath.Join(root, "kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareRootfs("twice", img.ID, t.TempDir(), nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second PrepareRootfs: %v, want AlreadyExists", err)
	}
	if _, err := os.Stat(filepath.Join(root, "kept")); err != nil {
		t.Errorf("the first rootfs lost its writable layer: %v", err)
	}
}
