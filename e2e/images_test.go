package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/registrytest"
)

// pinnedRepo is the repository the suite's daemon pins (--pinned-image).
const pinnedRepo = "e2e-pinned"

// TestPinnedImageThroughCRI: the image the daemon pins is listed with
// pinned set, which kubelet's image garbage collection honours, and
// RemoveImage refuses it with FailedPrecondition by name and by ID (the CRI
// has no force), while an unpinned image is removed.
func TestPinnedImageThroughCRI(t *testing.T) {
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	pinned := pushAndPull(t, pinnedRepo, baseImage(t))
	st, err := ic.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: pinned}})
	if err != nil || !st.GetImage().GetPinned() {
		t.Fatalf("ImageStatus %s: %v %v, want pinned", pinned, st.GetImage(), err)
	}
	for _, ref := range []string{pinned, st.GetImage().GetId()} {
		_, err := ic.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		wantCode(t, "RemoveImage "+ref, err, codes.FailedPrecondition, "pinned", "image.pinned_images")
	}
	list, err := ic.ListImages(ctx(t), &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range list.GetImages() {
		if img.GetId() == st.GetImage().GetId() && !img.GetPinned() {
			t.Errorf("ListImages: %v not pinned", img.GetRepoTags())
		}
	}
	free := pushAndPull(t, "e2e-unpinned", appendLayer(t, baseImage(t), regular("unpinned", []byte("x"))))
	if _, err := ic.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: free}}); err != nil {
		t.Errorf("RemoveImage of an unpinned image: %v", err)
	}
}

// TestImageVolumesThroughCRI: an image's VOLUMEs are directories its
// container finds and writes to.
func TestImageVolumesThroughCRI(t *testing.T) {
	ref := imageWith(t, "e2e-volumes", func(c *v1.Config) {
		c.Volumes = map[string]struct{}{"/data": {}, "/cache/sub": {}}
	})
	runContainerFrom(t, "volumes", ref, nil, "sh", "-c", "test -d /cache/sub && echo ok > /data/x && test -s /data/x")
}

// TestArtifactImageVolumeThroughCRI: an OCI artifact (KEP-4639's example
// kind of image volume: files with titles, a tar of a directory) pulled
// through the CRI mounts read-only in a container, whole and by sub path;
// as the container's own image it is refused with InvalidArgument.
func TestArtifactImageVolumeThroughCRI(t *testing.T) {
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	for _, e := range []tarEntry{{hdr: tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755}}, regular("data/x", []byte("from a tar"))} {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.body)
	}
	tw.Close()
	art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), "application/vnd.cncf.example.config.v1+json")
	for _, add := range []mutate.Addendum{
		{Layer: static.NewLayer([]byte("key: value\n"), "application/yaml"), Annotations: map[string]string{"org.opencontainers.image.title": "config/app.yaml"}},
		{Layer: static.NewLayer(tarball.Bytes(), "application/vnd.oci.image.layer.v1.tar")},
	} {
		var err error
		if art, err = mutate.Append(art, add); err != nil {
			t.Fatal(err)
		}
	}
	ref := pushAndPull(t, "e2e-artifact", art)
	runContainerFrom(t, "artifact", pushAndPull(t, "e2e-artifact-user", baseImage(t)), []*runtimeapi.Mount{
		{ContainerPath: "/art", Readonly: true, Image: &runtimeapi.ImageSpec{Image: ref}},
		{ContainerPath: "/one", Readonly: true, Image: &runtimeapi.ImageSpec{Image: ref}, ImageSubPath: "config"},
	}, "sh", "-c", `test "$(cat /art/config/app.yaml)" = "key: value" && test "$(cat /art/data/x)" = "from a tar" && test -f /one/app.yaml && ! touch /art/new`)

	podCfg := podConfig("artifact-as-image")
	pod := runPod(t, podCfg)
	_, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "artifact"}, Image: &runtimeapi.ImageSpec{Image: ref}}})
	wantCode(t, "an artifact as a container's image", err, codes.InvalidArgument, "OCI artifact", "image volume")
}

// TestPlatformAnnotationThroughCRI: PullImage of a manifest list picks the
// node's platform, or the one the ImageSpec's annotation (a pod's, as
// kubelet copies them) names; a malformed one is InvalidArgument.
func TestPlatformAnnotationThroughCRI(t *testing.T) {
	other := v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	if runtime.GOARCH == "arm64" {
		other = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	native := appendLayer(t, baseImage(t), regular("platform", []byte(runtime.GOARCH)))
	foreign := appendLayer(t, baseImage(t), regular("platform", []byte(other.Architecture)))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: foreign, Descriptor: v1.Descriptor{Platform: &other}},
		mutate.IndexAddendum{Add: native, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	ref := suite.registry + "/e2e-multiarch:1"
	n, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(n, idx); err != nil {
		t.Fatal(err)
	}
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	for _, c := range []struct {
		annotations map[string]string
		want        v1.Image
	}{
		{nil, native},
		{map[string]string{image.PlatformAnnotation: other.String()}, foreign},
	} {
		resp, err := ic.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref, Annotations: c.annotations}})
		want, _ := c.want.ConfigName()
		t.Cleanup(func() { removeImages(want.String()) })
		if err != nil || resp.ImageRef != want.String() {
			t.Errorf("PullImage with annotations %v: %v %v, want %s", c.annotations, resp, err, want)
		}
	}
	_, err = ic.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref,
		Annotations: map[string]string{image.PlatformAnnotation: "arm64"}}})
	wantCode(t, "a malformed platform annotation", err, codes.InvalidArgument, image.PlatformAnnotation)
	digest, _ := idx.Digest()
	st, err := ic.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: suite.registry + "/e2e-multiarch@" + digest.String()}})
	if want, _ := foreign.ConfigName(); err != nil || st.GetImage().GetId() != want.String() {
		t.Errorf("the list's digest names %v (%v), want the image last pulled from it, %s", st.GetImage(), err, want)
	}
}

// removeImages removes, through the CRI, every image ref named.
func removeImages(refs ...string) {
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	for _, ref := range refs {
		_, _ = ic.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	}
}

// acceptAnything is the suite daemon's signature policy between tests.
const acceptAnything = `{"default": [{"type": "insecureAcceptAnything"}]}`

// setPolicy replaces the daemon's signature policy (read again at its next
// use) until the test ends.
func setPolicy(t *testing.T, content string) {
	t.Helper()
	write := func(content string) error {
		tmp := suite.policy + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, suite.policy)
	}
	if err := write(content); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := write(acceptAnything); err != nil {
			t.Error(err)
		}
	})
}

// TestSignaturePolicyThroughCRI: with a containers-policy.json requiring a
// sigstore signature by a key made here for one repository, PullImage of
// an unsigned image there is refused (FailedPrecondition), of one signed as
// cosign signs (the .sig tag) admitted, and a container is made of it;
// once the policy rejects the repository, CreateContainer refuses the
// image already present, and admits it again when the policy is restored.
func TestSignaturePolicyThroughCRI(t *testing.T) {
	key := registrytest.NewKey(t)
	requireSigned := fmt.Sprintf(`{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {%q: [
		{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": "matchRepository"}}]}}}`, suite.registry+"/e2e-signed", key.PubFile)
	setPolicy(t, requireSigned)

	unsigned := push(t, "e2e-signed/unsigned", appendLayer(t, baseImage(t), regular("unsigned", []byte("x"))))
	wantCode(t, "pull of an unsigned image", pullImage(t, unsigned), codes.FailedPrecondition, "no sigstore signature", suite.policy)

	img := appendLayer(t, baseImage(t), regular("signed", []byte("x")))
	ref := push(t, "e2e-signed/app", img)
	digest, _ := img.Digest()
	d, err := name.NewDigest(suite.registry+"/e2e-signed/app@"+digest.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	registrytest.Sign(t, d, key, "", false)
	if err := pullImage(t, ref); err != nil {
		t.Fatalf("pull of the signed image: %v", err)
	}
	runContainerFrom(t, "signed", ref, nil)

	setPolicy(t, fmt.Sprintf(`{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {%q: [{"type": "reject"}]}}}`, suite.registry+"/e2e-signed"))
	podCfg := podConfig("signed-rejected")
	pod := runPod(t, podCfg)
	_, err = suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "rejected"}, Image: &runtimeapi.ImageSpec{Image: ref}}})
	wantCode(t, "CreateContainer once the policy rejects the image", err, codes.FailedPrecondition, "rejected", "signature policy")
	setPolicy(t, requireSigned)
	runContainerFrom(t, "signed-again", ref, nil)
}
