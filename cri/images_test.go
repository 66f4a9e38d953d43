package cri

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/image"
)

// TestStatusImage: a container's status names the image the pod asked for,
// not the ID kubelet creates it from; a client that sends no
// user_specified_image gets the name it gave, or the image's first tag for
// an ID.
func TestStatusImage(t *testing.T) {
	img := &image.Image{ID: "sha256:0123abcd", RepoTags: []string{"registry.k8s.io/e2e-test-images/busybox:1.37.0-2", "busybox:latest"}}
	untagged := &image.Image{ID: "sha256:0123abcd"}
	for _, c := range []struct {
		spec *runtimeapi.ImageSpec
		img  *image.Image
		want string
	}{
		{&runtimeapi.ImageSpec{Image: "sha256:0123abcd", UserSpecifiedImage: "busybox:1.37"}, img, "busybox:1.37"},
		{&runtimeapi.ImageSpec{Image: "sha256:0123abcd"}, img, "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"},
		{&runtimeapi.ImageSpec{Image: "0123abcd"}, img, "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"},
		{&runtimeapi.ImageSpec{Image: "busybox:latest"}, img, "busybox:latest"},
		{&runtimeapi.ImageSpec{Image: "sha256:0123abcd"}, untagged, "sha256:0123abcd"},
	} {
		if got := statusImage(c.spec, c.img); got != c.want {
			t.Errorf("%v: %q, want %q", c.spec, got, c.want)
		}
	}
}
