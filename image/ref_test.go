package image

import (
	"errors"
	"testing"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

func TestPlatformFromAnnotations(t *testing.T) {
	for value, want := range map[string]string{
		"linux/arm64/v8": "linux/arm64/v8", "linux/amd64": "linux/amd64", "windows/amd64": "windows/amd64",
		"linux": "", "linux/arm64/v8/x": "", "Linux/AMD64": "", "linux/amd64:10.0": "", "/arm64": "", "linux/../x": "",
	} {
		p, err := PlatformFromAnnotations(map[string]string{PlatformAnnotation: value, "other": "x"})
		switch {
		case want == "" && !errors.Is(err, errdefs.ErrInvalidArgument):
			t.Errorf("%q: %v %v, want InvalidArgument", value, p, err)
		case want != "" && (err != nil || p.String() != want):
			t.Errorf("%q: %v %v, want %s", value, p, err, want)
		}
	}
	if p, err := PlatformFromAnnotations(map[string]string{"other": "x"}); p != nil || err != nil {
		t.Errorf("no annotation: %v %v, want nil", p, err)
	}
}
