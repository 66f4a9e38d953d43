package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// maxPullRecords is how many pulls of one image are remembered.
const maxPullRecords = 8

// admit applies the signature policy to an image being pulled as ref,
// which resolved to digest on src: it fetches the image's signatures when
// the policy needs them and returns the pull's record, or why the policy
// refuses the image (before any layer is fetched).
func (s *Store) admit(ctx context.Context, src *source, ref Reference, digest v1.Hash, po PullOptions) (pullRecord, error) {
	rec := pullRecord{Name: ref.String(), Digest: digest.String(), Verdict: "no signature policy"}
	pol, err := s.policies.get()
	if err != nil || pol == nil {
		return rec, err
	}
	if reqs, _ := pol.requirementsFor(ref); needsSignatures(reqs) {
		if rec.Signatures, err = s.fetchSignatures(ctx, src, ref, digest, po); err != nil {
			return rec, fmt.Errorf("pull %s: signatures: %w", ref, err)
		}
	}
	if rec.Verdict, err = pol.evaluate(ref, rec.Digest, rec.Signatures); err != nil {
		return rec, err
	}
	klog.InfoS("Signature policy allows the image", "image", ref.String(), "digest", rec.Digest, "verdict", rec.Verdict)
	return rec, nil
}

// fetchSignatures reads the cosign signatures of the image at digest from
// the endpoint that serves it: the "sha256-<hex>.sig" tag of its
// repository, else its referrers of cosign's signature artifact type.
func (s *Store) fetchSignatures(ctx context.Context, src *source, ref Reference, digest v1.Hash, po PullOptions) ([]storedSignature, error) {
	var opts []name.Option
	if src.ep.plainHTTP {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(src.ep.host+"/"+ref.Repository(), opts...)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	ropts := s.remoteOptions(ctx, src, po)
	img, err := remote.Image(repo.Tag(digest.Algorithm+"-"+digest.Hex+".sig"), ropts...)
	if err == nil {
		return signaturesOf(img)
	}
	if !errors.Is(classify(err), errdefs.ErrNotFound) {
		return nil, classify(err)
	}
	idx, err := remote.Referrers(repo.Digest(digest.String()), append(ropts, remote.WithFilter("artifactType", cosignArtifactType))...)
	if errors.Is(classify(err), errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, classify(err)
	}
	var sigs []storedSignature
	for _, d := range im.Manifests {
		if len(sigs) >= maxSignatures {
			break
		}
		img, err := remote.Image(repo.Digest(d.Digest.String()), ropts...)
		if err != nil {
			return nil, classify(err)
		}
		more, err := signaturesOf(img)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, more...)
	}
	return sigs[:min(len(sigs), maxSignatures)], nil
}

// signaturesOf reads the simple-signing layers of a cosign signature
// image, at most maxSignatures of at most maxSignaturePayload bytes.
func signaturesOf(img v1.Image) ([]storedSignature, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, classify(err)
	}
	var sigs []storedSignature
	for _, l := range m.Layers {
		sig, ok := l.Annotations[cosignSignatureAnnotation]
		if l.MediaType != cosignSimpleSigningType || !ok || len(sigs) >= maxSignatures {
			continue
		}
		if l.Size > maxSignaturePayload {
			return nil, fmt.Errorf("signature payload %s is %d bytes; cri-mini reads at most %d: %w", l.Digest, l.Size, maxSignaturePayload, errdefs.ErrInvalidArgument)
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, classify(err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			return nil, classify(err)
		}
		// Read to EOF (the size is declared and bounded), where ggcr checks the digest.
		data, err := io.ReadAll(io.LimitReader(rc, maxSignaturePayload+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("signature payload %s: %w", l.Digest, classify(err))
		}
		sigs = append(sigs, storedSignature{Payload: data, Signature: sig})
	}
	return sigs, nil
}

// recordPull adds a pull's record to the image id, replacing an earlier
// one of the same name.
func (s *Store) recordPull(id string, p pullRecord) error {
	return s.update(func(ix *index) error {
		r := ix.Images[id]
		if r == nil {
			return fmt.Errorf("image %s vanished while pulling: %w", id, errdefs.ErrNotFound)
		}
		r.Pulls = slices.DeleteFunc(r.Pulls, func(q pullRecord) bool { return q.Name == p.Name })
		r.Pulls = append(r.Pulls, p)
		if len(r.Pulls) > maxPullRecords {
			r.Pulls = r.Pulls[len(r.Pulls)-maxPullRecords:]
		}
		return nil
	})
}

// CheckPolicy applies the signature policy as it is now to an image in the
// store (before a container is made of it): it is allowed when one of its
// pulls, with the signatures found then, or one of its names without a
// pull record (an imported image) satisfies the policy. No policy allows
// everything.
func (s *Store) CheckPolicy(ref string) error {
	pol, err := s.policies.get()
	if err != nil || pol == nil {
		return err
	}
	var rec record
	err = s.view(func(ix *index) error {
		r, _, err := ix.find(ref, s.opts.ShortNames)
		if err == nil {
			rec = *r
		}
		return err
	})
	if err != nil {
		return err
	}
	var why []string
	pulled := map[string]bool{}
	for _, p := range slices.Backward(rec.Pulls) {
		pulled[p.Name] = true
		parsed, err := ParseReference(p.Name)
		if err != nil {
			continue
		}
		if _, err := pol.evaluate(parsed, p.Digest, p.Signatures); err != nil {
			why = append(why, err.Error())
			continue
		}
		return nil
	}
	for _, n := range append(slices.Clone(rec.RepoTags), rec.RepoDigests...) {
		parsed, err := ParseReference(n)
		if err != nil || pulled[n] {
			continue
		}
		if _, err := pol.evaluate(parsed, parsed.Digest(), nil); err != nil {
			why = append(why, err.Error())
			continue
		}
		return nil
	}
	return fmt.Errorf("image %s is not allowed by the signature policy as it is now (%s); if the policy changed, remove the image and pull it again to fetch its signatures: %w",
		rec.ID, strings.Join(why, "; "), errdefs.ErrFailedPrecondition)
}
