package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// OCI artifacts, manifests whose config is not an image config (a Helm
// chart, a model, a bundle of files), are kept as images whose layers are
// their blobs, so that they mount read-only as image volumes (KEP-4639),
// sub paths included. They are not container images: PrepareRootfs refuses
// them.
//
// A blob whose media type names a tar (".tar", ".tar+gzip", ".tar+zstd")
// is unpacked as an image layer is; any other blob becomes one file, named
// by its org.opencontainers.image.title annotation (a relative path), or
// by its digest ("sha256-<hex>") without one.

// annoTitle names an artifact blob's file.
const annoTitle = "org.opencontainers.image.title"

// isArtifact tells whether a manifest describes something other than a
// container image.
func isArtifact(m *v1.Manifest) bool {
	return m.Config.MediaType != types.OCIConfigJSON && m.Config.MediaType != types.DockerConfigJSON
}

// artifactType is what an artifact is: the manifest's artifactType, or its
// config's media type.
func artifactType(m *v1.Manifest) string {
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	return string(m.Config.MediaType)
}

// artifactBlob is how one of an artifact's blobs is stored.
type artifactBlob struct {
	tar  bool
	name string // the file's path below the volume, for a blob that is not a tar
}

func artifactBlobOf(d v1.Descriptor) (artifactBlob, error) {
	if strings.Contains(string(d.MediaType), ".tar") {
		return artifactBlob{tar: true}, nil
	}
	name, ok := d.Annotations[annoTitle]
	if !ok {
		return artifactBlob{name: d.Digest.Algorithm + "-" + d.Digest.Hex}, nil
	}
	clean := path.Clean(name)
	if !filepath.IsLocal(clean) || strings.ContainsRune(name, 0) {
		return artifactBlob{}, fmt.Errorf("artifact blob %s: title %q is not a relative path inside the volume: %w", d.Digest, name, errdefs.ErrInvalidArgument)
	}
	return artifactBlob{name: clean}, nil
}

// chain is the blob's key in the store's layers: a hash over what makes the
// stored directory, which no image layer's chain ID (a hash of diff IDs)
// can equal.
func (b artifactBlob) chain(digest v1.Hash) string {
	kind := "file " + b.name
	if b.tar {
		kind = "tar"
	}
	sum := sha256.Sum256([]byte("cri-mini OCI artifact blob " + digest.String() + " " + kind))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// addArtifact stores an artifact's blobs and names it; it returns its ID,
// the manifest's digest (artifacts often share a config: the empty one).
func (s *Store) addArtifact(ctx context.Context, img v1.Image, m *v1.Manifest, names []string, watch *pullWatch) (string, error) {
	if err := checkSizes(img); err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("artifact manifest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return "", fmt.Errorf("artifact blobs: %w", classify(err))
	}
	if len(layers) != len(m.Layers) {
		return "", fmt.Errorf("artifact %s: %d blobs for %d descriptors: %w", digest, len(layers), len(m.Layers), errdefs.ErrInvalidArgument)
	}
	blobs := make([]artifactBlob, len(layers))
	chains := make([]string, len(layers))
	for i, d := range m.Layers {
		if blobs[i], err = artifactBlobOf(d); err != nil {
			return "", err
		}
		chains[i] = blobs[i].chain(d.Digest)
	}
	r := &record{ID: digest.String(), Layers: chains, Config: []byte("{}"), ArtifactType: artifactType(m)}
	err = s.addLayers(ctx, r, layers, names, watch, func(i int) layerWriter {
		return func(ctx context.Context, compressed io.Reader) (UnpackStats, error) {
			if blobs[i].tar {
				return s.unpackInto(ctx, chains[i], "", compressed)
			}
			return s.writeFileLayer(chains[i], blobs[i].name, compressed)
		}
	})
	if err != nil {
		return "", err
	}
	return digest.String(), nil
}

// writeFileLayer stores a blob as the one file name (mode 0644, owned by
// root) of a new layer directory, within the store's layer size limit.
func (s *Store) writeFileLayer(chain, name string, blob io.Reader) (UnpackStats, error) {
	tmp, done, err := s.scratchDir("layer")
	if err != nil {
		return UnpackStats{}, fmt.Errorf("artifact directory: %w", err)
	}
	defer done()
	stats := UnpackStats{Inodes: 1}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return stats, err
	}
	if dir := path.Dir(name); dir != "." {
		// tmp is new and holds only what is made here: no symlink on the way.
		if err := os.MkdirAll(filepath.Join(tmp, dir), 0o755); err != nil {
			return stats, err
		}
		stats.Inodes += int64(strings.Count(dir, "/") + 1)
	}
	f, err := os.OpenFile(filepath.Join(tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return stats, err
	}
	limit := s.opts.Unpack.maxBytes()
	n, err := io.Copy(f, io.LimitReader(blob, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return stats, fmt.Errorf("write %s: %w", name, err)
	}
	if n > limit {
		return stats, contentTooLarge(limit)
	}
	// Read to the end, where ggcr verifies the blob's digest and size.
	if _, err := io.Copy(io.Discard, blob); err != nil {
		return stats, fmt.Errorf("verifying the blob's digest: %w", err)
	}
	stats.Bytes = n
	return stats, s.storeLayer(tmp, chain, "", stats)
}
