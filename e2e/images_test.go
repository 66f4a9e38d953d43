package e2e

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	runContainerFrom(t, "volumes", ref, "sh", "-c", "test -d /cache/sub && echo ok > /data/x && test -s /data/x")
}
