package cri

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// rootfsWith is an image root with the given /etc files.
func rootfsWith(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestNumericUserIsNeverAName: an image whose passwd names a user "1000"
// with uid 0 must not turn run_as_user 1000 (or USER 1000) into root, and
// ImageStatus must report the uid the container gets.
func TestNumericUserIsNeverAName(t *testing.T) {
	root := rootfsWith(t, map[string]string{
		"passwd": "1000:x:0:0:fake root:/root:/bin/sh\n-1:x:0:0::/:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
		"group":  "root:x:0:\napp:x:1001:\nvideo:x:44:app\n0:x:0:app\n",
	})
	want := specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{0, 44, 1001}}
	i64 := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	for _, tc := range []struct {
		name      string
		sc        *runtimeapi.LinuxContainerSecurityContext
		imageUser string
	}{
		{"run_as_user", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000)}, ""},
		{"image USER", nil, "1000"},
		{"image USER with a leading zero", nil, "01000"},
	} {
		got, err := processUser(tc.sc, tc.imageUser, root)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %+v %v, want %+v (the uid, its passwd entry's gid and groups)", tc.name, got, err, want)
		}
	}
	for _, user := range []string{"1000", "01000", "1000:0"} {
		if uid, name := imageUser(user); uid == nil || uid.Value != 1000 || name != "" {
			t.Errorf("imageUser(%q) = %v %q, want uid 1000", user, uid, name)
		}
	}
	// A numeric group is a gid, never the group named "0".
	if got, err := processUser(nil, "app:0", root); err != nil || got.GID != 0 {
		t.Errorf("USER app:0: %+v %v", got, err)
	}
}

func TestIDsOutOfRangeAreRefused(t *testing.T) {
	root := rootfsWith(t, map[string]string{"passwd": "-1:x:0:0::/:/bin/sh\n4294967296:x:0:0::/:/bin/sh\n"})
	i64 := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	sc := func(uid int64) *runtimeapi.LinuxContainerSecurityContext {
		return &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(uid)}
	}
	for _, tc := range []struct {
		name      string
		sc        *runtimeapi.LinuxContainerSecurityContext
		imageUser string
	}{
		{"run_as_user -1", sc(-1), ""},
		{"run_as_user 4294967295", sc(4294967295), ""},
		{"run_as_user 1<<40", sc(1 << 40), ""},
		{"run_as_group -5", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1), RunAsGroup: i64(-5)}, ""},
		{"supplemental group -1", &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1), SupplementalGroups: []int64{-1}}, ""},
		{"USER -1", nil, "-1"},
		{"USER 4294967296", nil, "4294967296"},
		{"USER 99999999999999999999", nil, "99999999999999999999"},
		{"USER 1:-1", nil, "1:-1"},
		{"USER 1:4294967295", nil, "1:4294967295"},
	} {
		got, err := processUser(tc.sc, tc.imageUser, root)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%s: %+v %v, want InvalidArgument out of range", tc.name, got, err)
		}
	}
	for _, user := range []string{"-1", "4294967295", "99999999999999999999"} {
		if uid, name := imageUser(user); uid != nil || name != user {
			t.Errorf("imageUser(%q) = %v %q: an id no container runs as must not be reported as a uid", user, uid, name)
		}
	}
}

// TestHostileIDFiles: an image whose /etc/passwd or /etc/group is a FIFO,
// a device, a directory or huge makes the create fail at once, saying
// which file and why; a missing one is no error (scratch images).
func TestHostileIDFiles(t *testing.T) {
	roottest.Require(t)
	cases := map[string]func(p string) error{
		"a FIFO":             func(p string) error { return unix.Mkfifo(p, 0o644) },
		"a directory":        func(p string) error { return os.Mkdir(p, 0o755) },
		"larger than":        func(p string) error { return os.WriteFile(p, make([]byte, maxIDFile+1), 0o644) },
		"a character device": func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))) },
	}
	for kind, plant := range cases {
		for _, file := range []string{"passwd", "group"} {
			root := rootfsWith(t, map[string]string{"passwd": "app:x:1000:1000::/:/bin/sh\n", "group": "app:x:1000:\n"})
			p := filepath.Join(root, "etc", file)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := plant(p); err != nil {
				t.Fatal(err)
			}
			_, err := processUser(nil, "app", root)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "/etc/"+file) || !strings.Contains(err.Error(), kind) {
				t.Errorf("/etc/%s %s: %v, want InvalidArgument naming the file and %q", file, kind, err, kind)
			}
			if err != nil && strings.Contains(err.Error(), root) {
				t.Errorf("/etc/%s %s: the error names a host path: %v", file, kind, err)
			}
		}
	}
	empty := t.TempDir()
	if got, err := processUser(nil, "1234", empty); err != nil || got.UID != 1234 {
		t.Errorf("an image without /etc: %+v %v", got, err)
	}
}

// FuzzPasswd feeds /etc/passwd and /etc/group contents and a USER to the
// parsing and lookups: nothing panics, a numeric user is always that uid,
// every id is in range, and ImageStatus's uid is the one the container gets.
func FuzzPasswd(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n", "app:x:1000:\nvideo:x:44:app\n", "app")
	f.Add("1000:x:0:0::/:/bin/sh\n", "", "1000")
	f.Add("-1:x:0:0::/:/bin/sh\n", "", "-1")
	f.Add("a:x:4294967295:4294967295::/:\n", "g:x:-7:a\n", "a:g")
	f.Add("# c\n\n:::\nx:x:+5:07\n", "0:x:5:x\n", "x:0")
	f.Add("u:x:1:1\n", "g:x:99999999999:u,u,u\n", "+1:g")
	f.Add(strings.Repeat("x", 70000)+":x:1:1\n", "", "2")
	f.Fuzz(func(t *testing.T, passwd, group, user string) {
		pw, gr := parseIDFile([]byte(passwd)), parseIDFile([]byte(group))
		for _, e := range append(pw, gr...) {
			if len(e) < 4 {
				t.Fatalf("entry with %d fields: %q", len(e), e)
			}
		}
		userPart, groupPart, _ := strings.Cut(user, ":")
		uid, gid, name, err := lookupUser(pw, userPart)
		n, numeric, nerr := parseID("uid", userPart)
		switch {
		case numeric && nerr != nil:
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("user %q out of range: %v", userPart, err)
			}
		case numeric && (err != nil || uid != n):
			t.Fatalf("numeric user %q became uid %d (%v)", userPart, uid, err)
		case err == nil && !numeric && userPart != "" && name != userPart:
			t.Fatalf("user %q resolved through entry %q", userPart, name)
		}
		if err == nil {
			if uid > maxID || gid > maxID {
				t.Fatalf("ids out of range: %d %d", uid, gid)
			}
			reported, _ := imageUser(user)
			if reported != nil && reported.Value != int64(uid) {
				t.Fatalf("ImageStatus reports uid %d, the container gets %d", reported.Value, uid)
			}
			if numeric && reported == nil && userPart != "" {
				t.Fatalf("numeric user %q not reported as a uid", userPart)
			}
		}
		if groupPart != "" {
			if g, err := lookupGroup(gr, groupPart); err == nil && g > maxID {
				t.Fatalf("gid %d out of range", g)
			}
		}
		for _, g := range memberGroups(gr, name, gid) {
			if g > maxID || g == gid {
				t.Fatalf("member gid %d (primary %d)", g, gid)
			}
		}
		if _, err := strconv.Atoi(userPart); err == nil && !numeric {
			t.Fatalf("%q is a number but not read as one", userPart)
		}
	})
}
