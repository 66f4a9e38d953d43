package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/registrytest"
)

// testRegistry is a test registry (registrytest) with hooks to count,
// corrupt or stall blob downloads and to demand basic auth.
type testRegistry struct {
	*registrytest.Registry
	host string

	mu      sync.Mutex
	gets    map[string]int           // blob GETs by digest
	corrupt map[string]bool          // blobs served with one byte flipped
	stall   map[string]chan struct{} // blobs that hang until the channel closes
	stallAt map[string]int64         // blobs cut off after so many bytes, hanging until the client goes
	slow    map[string]time.Duration // blobs sent a KiB at a time, with this pause between
	user    string                   // basic auth demanded when set
	pass    string
}

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	return newHookedRegistry(t, registrytest.Options{})
}

// newHookedRegistry starts a registry as o says, with testRegistry's hooks.
func newHookedRegistry(t testing.TB, o registrytest.Options) *testRegistry {
	t.Helper()
	r := &testRegistry{gets: map[string]int{}, corrupt: map[string]bool{}, stall: map[string]chan struct{}{}, stallAt: map[string]int64{},
		slow: map[string]time.Duration{}}
	o.Wrap = r.hooks
	r.Registry = registrytest.New(t, o)
	r.host = r.Host
	t.Cleanup(func() {
		r.mu.Lock()
		for _, c := range r.stall {
			close(c)
		}
		r.stall = map[string]chan struct{}{}
		r.mu.Unlock()
	})
	return r
}

func (r *testRegistry) hooks(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		user, pass := r.user, r.pass
		r.mu.Unlock()
		if user != "" {
			if u, p, ok := req.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if i := strings.Index(req.URL.Path, "/blobs/sha256:"); i >= 0 && req.Method == http.MethodGet {
			digest := req.URL.Path[i+len("/blobs/"):]
			r.mu.Lock()
			r.gets[digest]++
			corrupt, stall, cut, slow := r.corrupt[digest], r.stall[digest], r.stallAt[digest], r.slow[digest]
			r.mu.Unlock()
			if stall != nil {
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				select {
				case <-stall:
				case <-req.Context().Done():
				}
				return
			}
			if corrupt || cut > 0 || slow > 0 {
				rec := httptest.NewRecorder()
				inner.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				if slow > 0 {
					w.Header().Set("Content-Length", rec.Header().Get("Content-Length"))
					w.WriteHeader(rec.Code)
					for len(body) > 0 {
						n := min(len(body), 1024)
						w.Write(body[:n])
						w.(http.Flusher).Flush()
						body = body[n:]
						time.Sleep(slow)
					}
					return
				}
				if corrupt {
					body[len(body)/2] ^= 0xff
				}
				w.Header().Set("Content-Length", rec.Header().Get("Content-Length"))
				w.WriteHeader(rec.Code)
				if cut == 0 {
					w.Write(body)
					return
				}
				w.Write(body[:cut])
				w.(http.Flusher).Flush()
				<-req.Context().Done()
				return
			}
		}
		inner.ServeHTTP(w, req)
	})
}

// log returns the requests the registry got so far.
func (r *testRegistry) log() []*http.Request { return r.Log() }

func (r *testRegistry) push(t testing.TB, ref string, img v1.Image) name.Reference {
	t.Helper()
	r.mu.Lock()
	user, pass := r.user, r.pass
	r.mu.Unlock()
	var opts []remote.Option
	if user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	}
	return r.Push(t, ref, img, opts...)
}

// image reads ref (repository:tag or @digest) from the registry.
func (r *testRegistry) image(ref string) (v1.Image, error) {
	n, err := name.ParseReference(r.host+"/"+ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	return remote.Image(n, remote.WithTransport(r.Transport))
}

func (r *testRegistry) blobGets(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets[digest]
}

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
	xattrs           map[string]string
}

func file(name, body string) entry {
	return entry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }

// layer builds a gzip layer from entries.
func layer(t testing.TB, entries ...entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func openStore(t testing.TB, reg *testRegistry, o Options) *Store {
	t.Helper()
	if reg != nil {
		o.InsecureRegistries = append(o.InsecureRegistries, reg.host)
	}
	o.Keychain = noKeychain{}
	s, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mountRootfs prepares a container rootfs and unmounts it at the end.
func mountRootfs(t testing.TB, s *Store, ctrID, imageID string) string {
	t.Helper()
	target := t.TempDir()
	if err := s.PrepareRootfs(ctrID, imageID, target, nil); err != nil {
		t.Fatalf("PrepareRootfs: %v", err)
	}
	t.Cleanup(func() {
		if err := s.ReleaseRootfs(ctrID, target); err != nil {
			t.Errorf("ReleaseRootfs: %v", err)
		}
		assertNotMounted(t, target)
	})
	return target
}

func assertNotMounted(t testing.TB, path string) {
	t.Helper()
	if mounted, err := mountinfo.MountedAt(path); err != nil || mounted {
		t.Errorf("%s is still mounted (%v)", path, err)
	}
}

// assertEmptyDir fails unless dir has no entries.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s holds %d entries, want none (first %s)", dir, len(entries), entries[0].Name())
	}
}

func pull(t testing.TB, s *Store, ref string) *Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := s.Pull(ctx, ref, PullOptions{})
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

func layerDirs(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.root, "layers"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// noKeychain keeps the host's docker config out of the tests.
type noKeychain struct{}

func (noKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }
