package e2e

import (
	"archive/tar"
	"bytes"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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
