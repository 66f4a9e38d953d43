package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// layerJobs is how many layers of one image download and unpack at once.
const layerJobs = 4

// layerAttempts is how often a layer whose stream broke off is fetched.
const layerAttempts = 3

// PullOptions are the per-pull inputs.
type PullOptions struct {
	// Auth are credentials for the image's registry (CRI AuthConfig); nil
	// means the store's keychain.
	Auth *authn.AuthConfig
	// AuthServer is the server the credentials are for (CRI's
	// server_address), "" for any endpoint of the registry.
	AuthServer string
	// Platform is picked from a manifest list instead of the store's
	// (PlatformFromAnnotations); nil means the store's.
	Platform *v1.Platform
	// Progress, if set, is called as layer bytes arrive.
	Progress func(Progress)
}

// Progress is the state of one layer of a pull.
type Progress struct {
	Layer       string // compressed digest
	Done, Total int64  // compressed bytes
	Finished    bool   // unpacked (or already present)
}

// Pull fetches an image into the store and names it ref (normalised). Each
// layer is downloaded and unpacked once, however many pulls want it. A short
// name is pulled as its first candidate (alias or search registry) that a
// registry serves.
func (s *Store) Pull(ctx context.Context, ref string, po PullOptions) (img *Image, err error) {
	defer func() { s.metrics.pulls.WithLabelValues(result(err)).Inc() }()
	cands, err := s.opts.ShortNames.Candidates(ref)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, c := range cands {
		img, err := s.pull(ctx, c, po)
		if err == nil {
			return img, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(cands) > 1 {
		return nil, fmt.Errorf("short name %q: no search registry served it: %w", ref, errors.Join(errs...))
	}
	return nil, errs[0]
}

func (s *Store) pull(ctx context.Context, parsed Reference, po PullOptions) (*Image, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	watch := newPullWatch(parsed.String(), po.Progress, s.metrics)
	s.metrics.inProgress.Inc()
	watched := make(chan struct{})
	go func() { watch.run(ctx, cancel, s.opts.StallTimeout); close(watched) }()
	defer func() {
		cancel(nil)
		<-watched
		s.metrics.inProgress.Dec()
		s.metrics.duration.Observe(time.Since(watch.start).Seconds())
	}()

	desc, src, err := s.resolve(ctx, parsed, po)
	if err != nil {
		return nil, err
	}
	watch.serving(src.String())
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", parsed, classify(err))
	}
	admitted, err := s.admit(ctx, src, parsed, desc.Digest, po)
	if err != nil {
		return nil, err
	}
	names := []string{parsed.Name() + "@" + desc.Digest.String()}
	if parsed.Tag() != "" {
		names = append(names, parsed.String())
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("pull %s: manifest: %w", parsed, classify(err))
	}
	var id string
	if isArtifact(m) {
		id, err = s.addArtifact(ctx, img, m, names, watch)
	} else {
		id, err = s.add(ctx, img, names, watch)
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		return nil, fmt.Errorf("pull %s: %w", parsed, err)
	}
	if err := s.recordPull(id, admitted); err != nil {
		return nil, fmt.Errorf("pull %s: %w", parsed, err)
	}
	klog.InfoS("Pulled image", "image", parsed.String(), "id", id, "endpoint", src.String(), "mirror", src.ep.mirror(),
		"bytes", watch.bytes.Load(), "duration", time.Since(watch.start).Round(time.Millisecond))
	return s.Get(id)
}

// add stores an image's layers and names it; it returns the image ID.
func (s *Store) add(ctx context.Context, img v1.Image, names []string, watch *pullWatch) (string, error) {
	id, err := img.ConfigName()
	if err != nil {
		return "", fmt.Errorf("config: %w", classify(err))
	}
	if err := checkSizes(img); err != nil {
		return "", err
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return "", fmt.Errorf("config: %w", classify(err))
	}
	if err := checkConfig(rawCfg); err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return "", fmt.Errorf("layers: %w", classify(err))
	}
	chains, err := chainIDs(cfg, len(layers))
	if err != nil {
		return "", err
	}
	err = s.addLayers(ctx, &record{ID: id.String(), Layers: chains, Config: rawCfg}, layers, names, watch, func(i int) layerWriter {
		diffID := cfg.RootFS.DiffIDs[i].String()
		return func(ctx context.Context, compressed io.Reader) (UnpackStats, error) {
			return s.unpackInto(ctx, chains[i], diffID, compressed)
		}
	})
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// resolve finds the image's manifest on the registry's endpoints, in
// order: a tag on the first endpoint that may resolve tags (capability
// "resolve") and knows it, the manifest by digest on the first that may
// serve content ("pull") and has it. go-containerregistry checks that what
// an endpoint sends by digest has that digest, so an endpoint trusted only
// to pull cannot change what a tag means.
func (s *Store) resolve(ctx context.Context, ref Reference, po PullOptions) (*remote.Descriptor, *source, error) {
	h, err := s.registries.hosts(ref.Registry())
	if err != nil {
		return nil, nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	digest := ref.Digest()
	var errs []error
	// Endpoints that could not be reached at all are not tried again by digest.
	down := map[*endpoint]bool{}
	tried := func(ep *endpoint, err error) {
		klog.V(2).InfoS("Registry endpoint failed", "image", ref.String(), "endpoint", ep.String(), "err", err)
		err = classify(err)
		s.metrics.attempts.WithLabelValues(ep.String(), result(err)).Inc()
		down[ep] = errors.Is(err, errdefs.ErrUnavailable)
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	if digest == "" {
		// An endpoint that may both resolve and pull serves the whole pull
		// unless a pull-only endpoint comes before it: then it only
		// resolves, and the content is fetched in the endpoints' order.
		pullOnlyBefore := false
		for _, ep := range h.endpoints {
			if ctx.Err() != nil {
				break
			}
			if !ep.resolve {
				pullOnlyBefore = pullOnlyBefore || ep.pull
				continue
			}
			r, err := ref.at(ep)
			if err != nil {
				return nil, nil, fmt.Errorf("pull %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
			}
			src := &source{ep: ep}
			if ep.pull && !pullOnlyBefore {
				desc, err := remote.Get(r, s.remoteOptions(ctx, src, po)...)
				if err == nil {
					s.metrics.attempts.WithLabelValues(ep.String(), "ok").Inc()
					return desc, src, nil
				}
				tried(ep, err)
				continue
			}
			d, err := remote.Head(r, s.remoteOptions(ctx, src, po)...)
			if err == nil {
				digest = d.Digest.String()
				klog.V(2).InfoS("Tag resolved", "image", ref.String(), "endpoint", src.String(), "digest", digest)
				break
			}
			tried(ep, err)
		}
		if digest == "" {
			return nil, nil, pullError(ref, h, errs, "resolve")
		}
	}
	byDigest, err := ref.withDigest(digest)
	if err != nil {
		return nil, nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	for _, ep := range h.endpoints {
		if !ep.pull || down[ep] || ctx.Err() != nil {
			continue
		}
		r, err := byDigest.at(ep)
		if err != nil {
			return nil, nil, fmt.Errorf("pull %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
		}
		src := &source{ep: ep}
		desc, err := remote.Get(r, s.remoteOptions(ctx, src, po)...)
		if err == nil {
			s.metrics.attempts.WithLabelValues(ep.String(), "ok").Inc()
			return desc, src, nil
		}
		tried(ep, err)
	}
	return nil, nil, pullError(ref, h, errs, "pull")
}

// source is the endpoint a pull talks to, and the scheme it settled on.
type source struct {
	ep     *endpoint
	scheme atomic.Value
}

func (s *source) String() string {
	scheme, _ := s.scheme.Load().(string)
	if scheme == "" {
		scheme = s.ep.url.Scheme
	}
	return scheme + "://" + s.ep.url.Host + s.ep.url.Path
}

// pullError is the failure of every endpoint of a registry, or the lack
// of an endpoint that may do what the pull needs.
func pullError(ref Reference, h *registryHosts, errs []error, capability string) error {
	if len(errs) == 0 {
		return fmt.Errorf("pull %s: no endpoint configured in %s may %s it (capabilities): %w", ref, h.source, capability, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("pull %s: %w", ref, errors.Join(errs...))
}

func (s *Store) remoteOptions(ctx context.Context, src *source, po PullOptions) []remote.Option {
	ep := src.ep
	platform := s.opts.Platform
	if po.Platform != nil {
		platform = po.Platform
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(*platform),
		remote.WithTransport(endpointTransport{ep: ep, next: ep.transport, scheme: &src.scheme}),
		remote.WithRetryBackoff(remote.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}),
		remote.WithUserAgent("cri-mini"),
	}
	if po.Auth != nil && *po.Auth != (authn.AuthConfig{}) && authFor(po.AuthServer, ep) {
		return append(opts, remote.WithAuth(authn.FromConfig(*po.Auth)))
	}
	return append(opts, remote.WithAuthFromKeychain(s.opts.Keychain))
}

// authFor tells whether the pull's credentials go to an endpoint: to every
// endpoint of the registry (a mirror the node's admin configured may need
// them, as with containerd), unless they name their server and it is
// another host.
func authFor(server string, ep *endpoint) bool {
	if server == "" {
		return true
	}
	host := server
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	host, _, _ = strings.Cut(host, "/")
	return canonicalHost(host) == canonicalHost(ep.url.Host)
}

// endpointTransport carries the requests of a pull to one endpoint: it
// refuses plain HTTP unless the endpoint allows it (go-containerregistry
// would otherwise fall back to HTTP for private IPs), puts the endpoint's
// API root in place of "/v2", names the registry to a mirror in the "ns"
// query parameter (as containerd, for mirrors that serve several
// registries), adds the configured headers, and caps manifests. Requests to
// other hosts (token servers, blob storage a registry redirects to) pass
// unchanged: headers meant for the registry stay with it.
type endpointTransport struct {
	ep     *endpoint
	next   http.RoundTripper
	scheme *atomic.Value // the scheme go-containerregistry settled on (its ping tries https, then http where allowed)
}

func (t endpointTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.ep.host {
		return t.next.RoundTrip(req)
	}
	t.scheme.Store(req.URL.Scheme)
	if req.URL.Scheme == "http" && !t.ep.plainHTTP {
		return nil, fmt.Errorf("registry %s answers only over plain HTTP, which is refused: list it with --insecure-registry %s or configure it as an http:// host: %w",
			t.ep.host, t.ep.url.Host, errdefs.ErrFailedPrecondition)
	}
	req = req.Clone(req.Context())
	if rest, ok := strings.CutPrefix(req.URL.Path, "/v2"); ok && (rest == "" || rest[0] == '/') {
		req.URL.Path, req.URL.RawPath = t.ep.url.Path+rest, ""
	}
	if t.ep.mirror() {
		q := req.URL.Query()
		q.Set("ns", t.ep.registry)
		req.URL.RawQuery = q.Encode()
	}
	for k, v := range t.ep.header {
		req.Header[k] = v
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	return limitManifest(req, resp)
}

// classify wraps registry errors with the errdefs kind they mean.
func classify(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
		}
		for _, d := range terr.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
			}
		}
		return err
	}
	var nerr net.Error
	var oerr *net.OpError
	if errors.As(err, &oerr) || errors.As(err, &nerr) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return err
}

// chainIDs computes each layer's chain ID from the config's diff IDs:
// chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)).
func chainIDs(cfg *v1.ConfigFile, n int) ([]string, error) {
	diffs := cfg.RootFS.DiffIDs
	if len(diffs) != n {
		return nil, fmt.Errorf("image config lists %d layers, manifest %d: %w", len(diffs), n, errdefs.ErrInvalidArgument)
	}
	chains := make([]string, n)
	for i, d := range diffs {
		if i == 0 {
			chains[i] = d.String()
			continue
		}
		sum := sha256.Sum256([]byte(chains[i-1] + " " + d.String()))
		chains[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return chains, nil
}

func (s *Store) pin(chains []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chains {
		s.pinned[c]++
	}
}

func (s *Store) unpin(chains []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chains {
		if s.pinned[c]--; s.pinned[c] <= 0 {
			delete(s.pinned, c)
		}
	}
}

// record adds the image rec describes to the index (unless it is there)
// and names it; a name moves from any image that had it.
func (s *Store) record(rec *record, names []string) error {
	return s.update(func(ix *index) error {
		for _, c := range rec.Layers {
			if ix.Layers[c] == nil {
				return fmt.Errorf("image %s: layer %s vanished while pulling", rec.ID, c)
			}
		}
		for _, r := range ix.Images {
			if r.ID != rec.ID {
				// A digest name moves too: the digest of a manifest list
				// names the image last pulled from it (another platform's).
				r.RepoTags = slices.DeleteFunc(r.RepoTags, func(t string) bool { return slices.Contains(names, t) })
				r.RepoDigests = slices.DeleteFunc(r.RepoDigests, func(d string) bool { return slices.Contains(names, d) })
			}
		}
		r := ix.Images[rec.ID]
		if r == nil {
			r = rec
			ix.Images[rec.ID] = r
		}
		for _, n := range names {
			list := &r.RepoTags
			if strings.Contains(n, "@") {
				list = &r.RepoDigests
			}
			if !slices.Contains(*list, n) {
				*list = append(*list, n)
			}
		}
		return nil
	})
}

// flight is one layer being fetched; later pulls of the layer wait for it.
type flight struct {
	done chan struct{}
	err  error
}

func (s *Store) hasLayer(chain string) bool {
	found := false
	_ = s.view(func(ix *index) error { found = ix.Layers[chain] != nil; return nil })
	return found
}

// addLayers makes every layer of the image r describes present, at most
// layerJobs at once, each stored by the writer write(i) gives, then records
// the image with names. The layers are pinned meanwhile, so a removal
// running at the same time does not collect them.
func (s *Store) addLayers(ctx context.Context, r *record, layers []v1.Layer, names []string, watch *pullWatch, write func(i int) layerWriter) error {
	s.pin(r.Layers)
	defer s.unpin(r.Layers)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(layerJobs)
	for i, l := range layers {
		g.Go(func() error { return s.ensureLayer(gctx, r.Layers[i], l, watch, write(i)) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return s.record(r, names)
}

// layerWriter stores a layer's blob, as it streams from the registry, in
// the store under its chain ID.
type layerWriter func(ctx context.Context, compressed io.Reader) (UnpackStats, error)

// ensureLayer makes the layer present, fetching it with write unless it is
// there or another pull is fetching it.
func (s *Store) ensureLayer(ctx context.Context, chain string, l v1.Layer, watch *pullWatch, write layerWriter) error {
	digest, err := l.Digest()
	if err != nil {
		return fmt.Errorf("layer %s: %w", chain, err)
	}
	for {
		if s.hasLayer(chain) {
			watch.report(Progress{Layer: digest.String(), Finished: true})
			return nil
		}
		s.mu.Lock()
		f := s.flights[chain]
		mine := f == nil
		if mine {
			f = &flight{done: make(chan struct{})}
			s.flights[chain] = f
		}
		s.mu.Unlock()
		if !mine {
			select {
			case <-f.done:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if f.err != nil && ctx.Err() == nil && !errors.Is(f.err, context.Canceled) {
				return f.err
			}
			continue // fetched by the other pull, or its caller gave up: look again
		}
		f.err = s.fetchLayerRetrying(ctx, digest.String(), l, watch, write)
		s.mu.Lock()
		delete(s.flights, chain)
		s.mu.Unlock()
		close(f.done)
		return f.err
	}
}

func (s *Store) fetchLayerRetrying(ctx context.Context, digest string, l v1.Layer, watch *pullWatch, write layerWriter) error {
	var err error
	for attempt := 1; attempt <= layerAttempts; attempt++ {
		var complete bool
		complete, err = s.fetchLayer(ctx, digest, l, watch, write)
		// The blob's content, over a limit or malformed, is no better the
		// next time.
		if err == nil || complete || ctx.Err() != nil || errors.Is(err, errdefs.ErrResourceExhausted) || errors.Is(err, errdefs.ErrInvalidArgument) {
			return err
		}
		klog.InfoS("Layer download broke off; retrying", "layer", digest, "attempt", attempt, "err", err)
		select {
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return err
}

// fetchLayer streams one layer from the registry to write, which stores it
// (ggcr checks the compressed digest at EOF). complete says the whole blob
// arrived, so a failure is not worth a retry.
func (s *Store) fetchLayer(ctx context.Context, digest string, l v1.Layer, watch *pullWatch, write layerWriter) (complete bool, err error) {
	total, err := l.Size()
	if err != nil {
		return false, fmt.Errorf("layer %s: %w", digest, classify(err))
	}
	rc, err := l.Compressed()
	if err != nil {
		return false, fmt.Errorf("layer %s: %w", digest, classify(err))
	}
	defer rc.Close()
	counted := &countingReader{r: rc, watch: watch, total: total, digest: digest}
	stats, err := write(ctx, counted)
	complete = counted.done.Load() >= total
	if err != nil {
		return complete, fmt.Errorf("layer %s: %w", digest, err)
	}
	watch.report(Progress{Layer: digest, Done: total, Total: total, Finished: true})
	klog.V(2).InfoS("Unpacked layer", "layer", digest, "bytes", total, "unpackedBytes", stats.Bytes)
	return true, nil
}

// unpackInto decompresses and unpacks a layer stream into a fresh
// directory, checks its diff ID (unless "": an artifact's tar has none),
// and stores it under its chain ID.
func (s *Store) unpackInto(ctx context.Context, chain, diffID string, compressed io.Reader) (UnpackStats, error) {
	tmp, done, err := s.scratchDir("layer")
	if err != nil {
		return UnpackStats{}, fmt.Errorf("unpack directory: %w", err)
	}
	defer done()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return UnpackStats{}, err
	}
	plain, closeFn, err := decompress(compressed)
	if err != nil {
		return UnpackStats{}, err
	}
	defer closeFn()
	h := sha256.New()
	tee := io.TeeReader(plain, h)
	stats, err := Unpack(ctx, tee, tmp, s.opts.Unpack)
	if err != nil {
		// A corrupted blob usually breaks the tar first: name the real cause.
		if _, verr := io.Copy(io.Discard, compressed); verr != nil {
			return stats, fmt.Errorf("verifying the blob's digest: %w (unpacking failed first: %v)", verr, err)
		}
		return stats, err
	}
	// Read to the end: the tar's padding, the compressor's trailer and the
	// blob's last byte, where ggcr verifies the compressed digest and size.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return stats, fmt.Errorf("read to the end: %w", err)
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return stats, fmt.Errorf("verifying the blob's digest: %w", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); diffID != "" && got != diffID {
		return stats, fmt.Errorf("uncompressed content has digest %s but the image config says %s: %w", got, diffID, errdefs.ErrInvalidArgument)
	}
	return stats, s.storeLayer(tmp, chain, diffID, stats)
}

// storeLayer renames a complete layer directory into place and records it
// in the index under its chain ID.
func (s *Store) storeLayer(tmp, chain, diffID string, stats UnpackStats) error {
	if err := os.Rename(tmp, s.layerDir(chain)); err != nil && !errors.Is(err, os.ErrExist) && !isNotEmpty(err) {
		return fmt.Errorf("store layer: %w", err)
	}
	// Another process may have stored the same layer first: its copy wins.
	return s.update(func(ix *index) error {
		if ix.Layers[chain] == nil {
			ix.Layers[chain] = &layerRecord{DiffID: diffID, Bytes: stats.Bytes, Inodes: stats.Inodes}
		}
		return nil
	})
}

func isNotEmpty(err error) bool {
	return errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}

// decompress picks the decompressor by the stream's magic bytes, which are
// more reliable than media types some registries get wrong.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read layer: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}
