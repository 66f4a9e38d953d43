package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Annotations that name an image inside an OCI archive.
const (
	annoContainerdName = "io.containerd.image.name"
	annoOCIRefName     = "org.opencontainers.image.ref.name"
)

// Import loads the images of a `docker save` tarball or an OCI image
// archive (a tar of an OCI layout, as `ctr export` or `skopeo copy
// oci-archive:` write) into the store, for nodes without a registry.
func (s *Store) Import(ctx context.Context, path string, progress func(Progress)) ([]*Image, error) {
	entries, err := tarEntries(path)
	if err != nil {
		return nil, err
	}
	var ids []string
	watch := newPullWatch(path, progress, s.metrics)
	switch {
	case entries.has("manifest.json"):
		ids, err = s.importDockerSave(ctx, path, entries, watch)
	case entries.has("index.json") && entries.has("oci-layout"):
		ids, err = s.importOCIArchive(ctx, path, entries, watch)
	default:
		return nil, fmt.Errorf("import %s: neither a docker save tarball (manifest.json) nor an OCI archive (oci-layout, index.json): %w",
			path, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	imgs := make([]*Image, 0, len(ids))
	for _, id := range ids {
		img, err := s.Get(id)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// entrySizes are the sizes of an archive's files, by name.
type entrySizes map[string]int64

func (e entrySizes) has(name string) bool { _, ok := e[name]; return ok }

// check refuses the document of the archive at name when it is over limit,
// before anything reads it into memory.
func (e entrySizes) check(what, name string, limit int64) error {
	if size := e[name]; size > limit {
		return tooLarge(what, size, limit)
	}
	return nil
}

// blobName is where an OCI layout keeps the blob of a digest.
func blobName(d v1.Hash) string { return "blobs/" + d.Algorithm + "/" + d.Hex }

// tarEntries lists the files of a tar archive with their sizes.
func tarEntries(path string) (entrySizes, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	entries := entrySizes{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("import %s: not a tar archive: %v: %w", path, err, errdefs.ErrInvalidArgument)
		}
		entries[filepath.Clean(strings.TrimPrefix(hdr.Name, "./"))] = hdr.Size
	}
}

func (s *Store) importDockerSave(ctx context.Context, path string, entries entrySizes, watch *pullWatch) ([]string, error) {
	if err := entries.check("manifest.json", "manifest.json", maxManifestBytes); err != nil {
		return nil, err
	}
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	manifest, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var ids []string
	for i, d := range manifest {
		if err := entries.check("config", filepath.Clean(d.Config), maxConfigBytes); err != nil {
			return nil, err
		}
		var img v1.Image
		var names []string
		for _, t := range d.RepoTags {
			ref, err := ParseReference(t)
			if err != nil {
				return nil, err
			}
			names = append(names, ref.String())
		}
		if len(d.RepoTags) > 0 {
			tag, err := name.NewTag(d.RepoTags[0])
			if err != nil {
				return nil, fmt.Errorf("RepoTag %q: %v: %w", d.RepoTags[0], err, errdefs.ErrInvalidArgument)
			}
			img, err = tarball.Image(opener, &tag)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", d.RepoTags[0], err)
			}
		} else if len(manifest) == 1 {
			if img, err = tarball.Image(opener, nil); err != nil {
				return nil, fmt.Errorf("image %d: %w", i, err)
			}
		} else {
			return nil, fmt.Errorf("image %d of %d has no RepoTags to tell it apart: %w", i+1, len(manifest), errdefs.ErrInvalidArgument)
		}
		id, err := s.add(ctx, img, names, watch)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// importOCIArchive unpacks the archive's layout into a scratch directory of
// the store (blobs are read from there) and adds every image it names.
func (s *Store) importOCIArchive(ctx context.Context, path string, entries entrySizes, watch *pullWatch) ([]string, error) {
	if err := entries.check("index", "index.json", maxManifestBytes); err != nil {
		return nil, err
	}
	dir, done, err := s.scratchDir("import")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := extractLayout(path, dir); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout index: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var ids []string
	for _, d := range im.Manifests {
		img, err := s.platformImage(idx, d, entries)
		if err != nil {
			return nil, err
		}
		m, err := img.Manifest()
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %v: %w", d.Digest, err, errdefs.ErrInvalidArgument)
		}
		if err := entries.check("config", blobName(m.Config.Digest), maxConfigBytes); err != nil {
			return nil, err
		}
		var names []string
		refName := d.Annotations[annoContainerdName]
		if refName == "" && strings.ContainsAny(d.Annotations[annoOCIRefName], "/:") {
			refName = d.Annotations[annoOCIRefName] // some tools put a full name here, others only a tag
		}
		if refName != "" {
			ref, err := ParseReference(refName)
			if err != nil {
				return nil, err
			}
			names = append(names, ref.String())
			if ref.Tag() != "" {
				names = append(names, ref.Name()+"@"+d.Digest.String())
			}
		}
		id, err := s.add(ctx, img, names, watch)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// platformImage returns the image a layout index entry points at, picking
// this machine's platform from a nested index. Each manifest and index is
// checked against the cap before it is read.
func (s *Store) platformImage(idx v1.ImageIndex, d v1.Descriptor, entries entrySizes) (v1.Image, error) {
	if err := entries.check("manifest", blobName(d.Digest), maxManifestBytes); err != nil {
		return nil, err
	}
	if !d.MediaType.IsIndex() {
		return idx.Image(d.Digest)
	}
	child, err := idx.ImageIndex(d.Digest)
	if err != nil {
		return nil, err
	}
	cm, err := child.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, m := range cm.Manifests {
		if m.Platform != nil && m.Platform.Satisfies(*s.opts.Platform) {
			if err := entries.check("manifest", blobName(m.Digest), maxManifestBytes); err != nil {
				return nil, err
			}
			return child.Image(m.Digest)
		}
	}
	return nil, fmt.Errorf("index %s has no image for %s/%s: %w", d.Digest, s.opts.Platform.OS, s.opts.Platform.Architecture, errdefs.ErrNotFound)
}

// extractLayout writes the archive's regular files under dir. The archive
// is untrusted: only plain relative names below dir are accepted.
func extractLayout(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("OCI archive: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		name := filepath.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if !filepath.IsLocal(name) {
			return fmt.Errorf("OCI archive entry %q leaves the archive: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700); err != nil {
				return err
			}
			// O_EXCL|O_NOFOLLOW: only regular files and directories are made,
			// so no earlier entry can redirect this one.
			out, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("OCI archive entry %q: %w", hdr.Name, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("OCI archive entry %q: %w", hdr.Name, err)
			}
		}
	}
}
