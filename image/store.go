package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
)

// DefaultStallTimeout is how long a pull may go without receiving a byte
// before it is cancelled (containerd's image_pull_progress_timeout is 5m).
const DefaultStallTimeout = 5 * time.Minute

// Options configure a Store.
type Options struct {
	// InsecureRegistries may be reached over plain HTTP or with unverified
	// TLS ("host" or "host:port"), wherever they are configured. Every other
	// registry must speak verified HTTPS.
	InsecureRegistries []string
	// Mirrors maps a registry host ("docker.io", "registry.k8s.io") to a mirror
	// URL ("http://127.0.0.1:5000") tried before the registry itself, as a
	// hosts.toml with that one mirror would. The pulled image keeps its
	// original name. An http:// mirror is allowed to use plain HTTP: the
	// operator wrote it so.
	Mirrors map[string]string
	// Keychain supplies credentials when a pull brings none; nil means the
	// default keychain (docker config files).
	Keychain authn.Keychain
	// StallTimeout cancels a pull that receives nothing for this long; 0 means
	// DefaultStallTimeout.
	StallTimeout time.Duration
	// Platform is the one picked from manifest lists; nil means linux and
	// this machine's architecture.
	Platform *v1.Platform
	// Unpack limits each layer.
	Unpack UnpackOptions
	// CollectGarbage removes, at Open, layers and unpack debris that nothing
	// references. Only the daemon sets it: a CLI opening the store of a
	// running daemon must not collect the layers of the daemon's pulls.
	CollectGarbage bool
	// ShortNames say what names without a registry mean; the zero value
	// refuses them.
	ShortNames ShortNames
	// IgnoreImageVolumes leaves an image's VOLUMEs alone; otherwise each is
	// made a directory in the container's writable layer.
	IgnoreImageVolumes bool
	// SignaturePolicy is a containers-policy.json file the images must
	// satisfy, at pull and at each container's creation; "" means none.
	SignaturePolicy string
	// Pinned are images (names, short names included, or "sha256:" IDs)
	// reported pinned and never removed, so kubelet's image garbage
	// collection keeps them.
	Pinned []string
	// RegistryConfigPath lists (colon-separated) directories holding one
	// directory per registry host with a hosts.toml, as containerd's
	// config_path; "" means none.
	RegistryConfigPath string
}

// Image is an image in the store.
type Image struct {
	// ID is the digest of the image's config ("sha256:..."), as kubelet expects.
	ID          string
	RepoTags    []string
	RepoDigests []string
	// Size is the bytes its unpacked layers occupy.
	Size uint64
	// Config is shared by every caller that gets the image: read it only.
	Config *v1.ConfigFile
	// Layers are the chain IDs of its layers, lowest first.
	Layers []string
	// Pinned images (Options.Pinned) are never removed.
	Pinned bool
	// ArtifactType is what an OCI artifact is (its artifactType or config
	// media type); "" for a container image.
	ArtifactType string
	// Verifications say what the signature policy found at each pull.
	Verifications []Verification
}

// Verification is what the signature policy said of one pull of an image.
type Verification struct {
	Name       string `json:"name"`
	Digest     string `json:"digest"`
	Signatures int    `json:"signatures"`
	Verdict    string `json:"verdict"`
}

// FsUsage is what part of the store occupies on its file system.
type FsUsage struct {
	Mountpoint string
	Bytes      uint64
	Inodes     uint64
}

// Store is a content-addressed image store under one directory:
//
//	index.json            images (names, config, layer chain IDs) and layers
//	layers/<chain-id>/    one unpacked layer (overlay form), shared by images
//	containers/<id>/      a container's writable layer (upper, work, record)
//	tmp/<kind>-*/         layers being unpacked (renamed into layers/ when
//	                      whole) and imports being read, each beside a
//	                      .lock file its process holds an flock on
//
// The index is the truth: a layer directory or image is visible only once
// the index names it, so a pull killed half way leaves nothing visible. Every
// change takes an flock on the store, so the daemon and `cri-mini image`
// may share it.
type Store struct {
	root string
	opts Options

	registries *registries
	policies   *policies
	metrics    *metrics
	// pins are the canonical names and IDs of Options.Pinned.
	pins map[string]bool

	mu      sync.Mutex
	ix      *index
	ixStat  fileID
	flights map[string]*flight // layers being fetched, by chain ID
	pinned  map[string]int     // layers a pull in progress relies on

	// upperMount is where the file system of the writable layers is
	// mounted, by its device: found in the mount table once, not per
	// container and call (a full node's table has hundreds of lines).
	upperMount sync.Map // uint64 (device) -> string
}

type index struct {
	Images map[string]*record      `json:"images"`
	Layers map[string]*layerRecord `json:"layers"`
}

type record struct {
	ID          string          `json:"id"`
	RepoTags    []string        `json:"repoTags,omitempty"`
	RepoDigests []string        `json:"repoDigests,omitempty"`
	Layers      []string        `json:"layers"`
	Config      json.RawMessage `json:"config"`
	// ArtifactType is set for an OCI artifact, which is not a container
	// image: its Config is empty and its layers its blobs.
	ArtifactType string `json:"artifactType,omitempty"`
	// Pulls are the names it was pulled as, latest last, each with the
	// signatures found and the policy's verdict.
	Pulls []pullRecord `json:"pulls,omitempty"`

	// parsed is Config decoded, once per loaded index: kubelet lists and
	// inspects images every few seconds.
	parsed *v1.ConfigFile
}

type layerRecord struct {
	DiffID string `json:"diffID"`
	Bytes  int64  `json:"bytes"`
	Inodes int64  `json:"inodes"`
}

// fileID tells whether index.json was replaced by another process.
type fileID struct {
	ino   uint64
	mtime int64
}

// Open opens (creating if needed) the store at root.
func Open(root string, o Options) (*Store, error) {
	for _, d := range []string{root, filepath.Join(root, "layers"), filepath.Join(root, "containers"), filepath.Join(root, "tmp")} {
		// 0700: layers hold setuid binaries that host users must not reach.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Platform == nil {
		o.Platform = &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	s := &Store{root: root, opts: o, flights: map[string]*flight{}, pinned: map[string]int{},
		registries: newRegistries(o.RegistryConfigPath, o.InsecureRegistries, o.Mirrors), metrics: newMetrics(), pins: map[string]bool{},
		policies: &policies{file: o.SignaturePolicy}}
	for _, p := range o.Pinned {
		if strings.HasPrefix(p, "sha256:") {
			s.pins[p] = true
			continue
		}
		cands, err := o.ShortNames.Candidates(p)
		if err != nil {
			return nil, fmt.Errorf("pinned image: %w", err)
		}
		for _, c := range cands {
			s.pins[c.String()] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.reload(); err != nil {
		return nil, err
	}
	if o.CollectGarbage {
		if err := s.collect(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// CheckConfig reads every registry's hosts.toml under the config path and
// the signature policy: a daemon calls it at start, to fail there, naming
// the file, rather than at a pull.
func (s *Store) CheckConfig() error {
	_, err := s.policies.get()
	return errors.Join(s.registries.check(), err)
}

// lock takes the store's cross-process lock; the caller holds s.mu.
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return func() { f.Close() }, nil
}

func (s *Store) indexPath() string { return filepath.Join(s.root, "index.json") }

// reload reads index.json if another process replaced it; the caller holds s.mu.
func (s *Store) reload() error {
	st, err := os.Stat(s.indexPath())
	if errors.Is(err, fs.ErrNotExist) {
		if s.ix == nil {
			s.ix = &index{Images: map[string]*record{}, Layers: map[string]*layerRecord{}}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	id := fileID{ino: st.Sys().(*syscall.Stat_t).Ino, mtime: st.ModTime().UnixNano()}
	if s.ix != nil && id == s.ixStat {
		return nil
	}
	data, err := os.ReadFile(s.indexPath())
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	ix := &index{}
	if err := json.Unmarshal(data, ix); err != nil {
		return fmt.Errorf("image index %s is corrupt: %w", s.indexPath(), err)
	}
	if ix.Images == nil {
		ix.Images = map[string]*record{}
	}
	if ix.Layers == nil {
		ix.Layers = map[string]*layerRecord{}
	}
	s.ix, s.ixStat = ix, id
	return nil
}

// update applies fn to the freshest index and writes it back atomically.
func (s *Store) update(fn func(ix *index) error) error {
	return s.locked(func(ix *index) (bool, error) { return true, fn(ix) })
}

// locked runs fn on the freshest index holding the cross-process lock, and
// writes the index back when fn says it changed it.
func (s *Store) locked(fn func(ix *index) (changed bool, err error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.reload(); err != nil {
		return err
	}
	changed, err := fn(s.ix)
	if err != nil {
		// fn may have changed the index half way: read it again next time.
		s.ix = nil
		return err
	}
	if !changed {
		return nil
	}
	return s.writeIndex()
}

// writeIndex writes s.ix atomically; the caller holds s.mu and the lock.
func (s *Store) writeIndex() error {
	data, err := json.Marshal(s.ix)
	if err == nil {
		err = fsutil.WriteFileAtomic(s.indexPath(), data, 0o600)
	}
	var st os.FileInfo
	if err == nil {
		st, err = os.Stat(s.indexPath())
	}
	if err != nil {
		s.ix = nil
		return fmt.Errorf("image index: %w", err)
	}
	s.ixStat = fileID{ino: st.Sys().(*syscall.Stat_t).Ino, mtime: st.ModTime().UnixNano()}
	return nil
}

// view runs fn on the freshest index without changing it.
func (s *Store) view(fn func(ix *index) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reload(); err != nil {
		return err
	}
	return fn(s.ix)
}

func (s *Store) layerDir(chain string) string {
	return filepath.Join(s.root, "layers", strings.TrimPrefix(chain, "sha256:"))
}

func (ix *index) image(r *record) (*Image, error) {
	img := &Image{ID: r.ID, RepoTags: slices.Clone(r.RepoTags), RepoDigests: slices.Clone(r.RepoDigests), Layers: slices.Clone(r.Layers),
		ArtifactType: r.ArtifactType}
	if r.parsed == nil {
		cfg := &v1.ConfigFile{}
		if err := json.Unmarshal(r.Config, cfg); err != nil {
			return nil, fmt.Errorf("image %s: stored config: %w", r.ID, err)
		}
		r.parsed = cfg
	}
	img.Config = r.parsed
	for _, p := range r.Pulls {
		img.Verifications = append(img.Verifications, Verification{Name: p.Name, Digest: p.Digest, Signatures: len(p.Signatures), Verdict: p.Verdict})
	}
	for _, l := range r.Layers {
		if lr := ix.Layers[l]; lr != nil {
			img.Size += uint64(lr.Bytes)
		}
	}
	return img, nil
}

// image is r as an Image, pinned or not.
func (s *Store) image(ix *index, r *record) (*Image, error) {
	img, err := ix.image(r)
	if err != nil {
		return nil, err
	}
	img.Pinned = s.isPinned(r)
	return img, nil
}

// isPinned tells whether a pinned name or ID denotes r.
func (s *Store) isPinned(r *record) bool {
	if s.pins[r.ID] {
		return true
	}
	for _, names := range [][]string{r.RepoTags, r.RepoDigests} {
		for _, n := range names {
			if s.pins[n] {
				return true
			}
		}
	}
	return false
}

var hexID = regexp.MustCompile(`^[0-9a-f]{4,64}$`)

// find resolves a name, an ID or a unique ID prefix (at least 4 hex digits,
// with or without "sha256:") to a record; a short name is looked up as
// each of its candidates in turn. byName says which name matched.
func (ix *index) find(ref string, sn ShortNames) (r *record, byName string, err error) {
	if hex := strings.TrimPrefix(ref, "sha256:"); hexID.MatchString(hex) {
		var match *record
		for id, rec := range ix.Images {
			if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), hex) {
				if match != nil {
					return nil, "", fmt.Errorf("image ID prefix %q matches several images: %w", ref, errdefs.ErrInvalidArgument)
				}
				match = rec
			}
		}
		if match != nil {
			return match, "", nil
		}
		if strings.HasPrefix(ref, "sha256:") {
			return nil, "", fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
		}
	}
	cands, err := sn.Candidates(ref)
	if err != nil {
		return nil, "", err
	}
	for _, c := range cands {
		canon := c.String()
		for _, rec := range ix.Images {
			if slices.Contains(rec.RepoTags, canon) || slices.Contains(rec.RepoDigests, canon) {
				return rec, canon, nil
			}
		}
	}
	return nil, "", fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
}

// Get returns the image a name, ID or ID prefix denotes.
func (s *Store) Get(ref string) (*Image, error) {
	var img *Image
	err := s.view(func(ix *index) error {
		r, _, err := ix.find(ref, s.opts.ShortNames)
		if err != nil {
			return err
		}
		img, err = s.image(ix, r)
		return err
	})
	return img, err
}

// List returns every image, ordered by ID.
func (s *Store) List() ([]*Image, error) {
	var imgs []*Image
	err := s.view(func(ix *index) error {
		for _, r := range ix.Images {
			img, err := s.image(ix, r)
			if err != nil {
				return err
			}
			imgs = append(imgs, img)
		}
		return nil
	})
	slices.SortFunc(imgs, func(a, b *Image) int { return strings.Compare(a.ID, b.ID) })
	return imgs, err
}

// Remove removes an image. Given a tag of an image that has other tags, it
// removes only that tag; given an ID or digest, the whole image. Layers no
// other image or container uses are deleted. An unknown image is
// ErrNotFound; a pinned image, or a pinned tag, is FailedPrecondition: the
// CRI's RemoveImage has no force, so pinning is undone in the
// configuration only.
func (s *Store) Remove(ref string) error {
	return s.updateAndCollect(func(ix *index) (bool, error) {
		r, byName, err := ix.find(ref, s.opts.ShortNames)
		if err != nil {
			return false, err
		}
		if byName != "" && slices.Contains(r.RepoTags, byName) && len(r.RepoTags) > 1 {
			if s.pins[byName] {
				return false, pinnedError(ref)
			}
			r.RepoTags = slices.DeleteFunc(r.RepoTags, func(t string) bool { return t == byName })
			return true, nil
		}
		if s.isPinned(r) {
			return false, pinnedError(ref)
		}
		delete(ix.Images, r.ID)
		return true, nil
	})
}

func pinnedError(ref string) error {
	return fmt.Errorf("image %s is pinned (image.pinned_images): it is not removed, and the CRI has no force to override that; take it off the list and restart the daemon first: %w",
		ref, errdefs.ErrFailedPrecondition)
}

// updateAndCollect applies fn to the index like locked, then drops the
// layers nothing uses any more from it and deletes their directories. The
// index is written only if one of the two changed it.
func (s *Store) updateAndCollect(fn func(ix *index) (changed bool, err error)) error {
	var unused []string
	err := s.locked(func(ix *index) (bool, error) {
		changed, err := fn(ix)
		if err != nil {
			return false, err
		}
		unused, err = s.unusedLayers(ix)
		return changed || len(unused) > 0, err
	})
	if err != nil {
		return err
	}
	s.deleteLayers(unused)
	return nil
}

// unusedLayers drops from the index the layers that no image, container or
// pull in progress uses and returns them; the caller holds s.mu and the lock.
func (s *Store) unusedLayers(ix *index) ([]string, error) {
	used := map[string]bool{}
	for _, r := range ix.Images {
		for _, l := range r.Layers {
			used[l] = true
		}
	}
	ctrs, err := s.containerRecords()
	if err != nil {
		return nil, err
	}
	for _, c := range ctrs {
		for _, l := range c.Layers {
			used[l] = true
		}
	}
	var unused []string
	for l := range ix.Layers {
		if !used[l] && s.pinned[l] == 0 {
			unused = append(unused, l)
			delete(ix.Layers, l)
		}
	}
	return unused, nil
}

func (s *Store) deleteLayers(chains []string) {
	for _, l := range chains {
		if err := os.RemoveAll(s.layerDir(l)); err != nil {
			// The index no longer names it: the next daemon start removes it.
			klog.ErrorS(err, "Remove unused layer", "layer", l)
		}
	}
}

// collect removes what nothing references: scratch directories no live
// process holds, layer directories the index does not name, and indexed
// layers no image or container uses. The caller holds s.mu and the lock.
func (s *Store) collect() error {
	if err := s.collectScratch(); err != nil {
		return err
	}
	unused, err := s.unusedLayers(s.ix)
	if err != nil {
		return err
	}
	dirs, err := os.ReadDir(filepath.Join(s.root, "layers"))
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	for _, e := range dirs {
		if s.ix.Layers["sha256:"+e.Name()] == nil && !slices.Contains(unused, "sha256:"+e.Name()) {
			unused = append(unused, "sha256:"+e.Name())
		}
	}
	if len(unused) == 0 {
		return nil
	}
	klog.InfoS("Removing layers nothing uses", "count", len(unused))
	if err := s.writeIndex(); err != nil {
		return err
	}
	s.deleteLayers(unused)
	return nil
}

// scratchDir makes a directory under tmp/ for an unpack or an import, and
// returns it with the function that removes it. Before the directory is
// made, its lock file (the same name with ".lock") is created and locked
// with flock, and it stays locked until the directory is gone: the kernel
// drops the lock when the process dies, however it dies, so the start-up
// collection knows debris by its free lock, not by a pid that may belong
// to a zombie its parent has not reaped yet, or to another process since.
func (s *Store) scratchDir(kind string) (string, func(), error) {
	lock, err := os.CreateTemp(filepath.Join(s.root, "tmp"), kind+"-*.lock")
	if err != nil {
		return "", nil, fmt.Errorf("scratch directory: %w", err)
	}
	release := func() {
		_ = os.Remove(lock.Name())
		lock.Close()
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		release()
		return "", nil, fmt.Errorf("scratch directory: lock %s: %w", lock.Name(), err)
	}
	dir := strings.TrimSuffix(lock.Name(), ".lock")
	if err := os.Mkdir(dir, 0o700); err != nil {
		release()
		return "", nil, fmt.Errorf("scratch directory: %w", err)
	}
	return dir, func() {
		// A no-op for a layer renamed into place.
		if err := os.RemoveAll(dir); err != nil {
			klog.ErrorS(err, "Remove scratch directory; the next start collects it", "dir", dir)
		}
		release()
	}, nil
}

// collectScratch removes the scratch directories under tmp/ whose lock no
// process holds (their process died half way), with their lock files.
func (s *Store) collectScratch() error {
	tmp := filepath.Join(s.root, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".lock")
		if seen[name] {
			continue
		}
		seen[name] = true
		if held, err := lockHeld(filepath.Join(tmp, name+".lock")); err != nil {
			return err
		} else if held {
			continue
		}
		klog.InfoS("Removing an unpack or import a crash interrupted", "dir", name)
		if err := os.RemoveAll(filepath.Join(tmp, name)); err != nil {
			return fmt.Errorf("image store: %w", err)
		}
		if err := os.Remove(filepath.Join(tmp, name+".lock")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("image store: %w", err)
		}
	}
	return nil
}

// lockHeld tells whether a live process holds the flock of a scratch
// directory's lock file. A directory without one is debris: its lock file
// goes only after it.
func lockHeld(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("image store: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return true, nil
		}
		return false, fmt.Errorf("image store: lock %s: %w", path, err)
	}
	return false, nil
}

// FsInfo reports what the image layers and the containers' writable layers
// occupy, each with the mount point of the file system holding them.
func (s *Store) FsInfo() (images, containers FsUsage, err error) {
	if images.Mountpoint, err = mountinfo.MountpointOf(filepath.Join(s.root, "layers")); err != nil {
		return images, containers, err
	}
	if containers.Mountpoint, err = mountinfo.MountpointOf(filepath.Join(s.root, "containers")); err != nil {
		return images, containers, err
	}
	err = s.view(func(ix *index) error {
		for _, l := range ix.Layers {
			images.Bytes += uint64(l.Bytes)
			images.Inodes += uint64(l.Inodes)
		}
		return nil
	})
	if err != nil {
		return images, containers, err
	}
	ctrs, err := os.ReadDir(filepath.Join(s.root, "containers"))
	if err != nil {
		return images, containers, fmt.Errorf("container layers: %w", err)
	}
	for _, c := range ctrs {
		b, n := diskUsage(filepath.Join(s.root, "containers", c.Name(), "upper"))
		containers.Bytes += b
		containers.Inodes += n
	}
	return images, containers, nil
}

// diskUsage sums the allocated bytes and the inodes under dir.
func diskUsage(dir string) (bytes, inodes uint64) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // removed meanwhile
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				bytes += uint64(st.Blocks) * 512
			}
			inodes++
		}
		return nil
	})
	return bytes, inodes
}
