package image

import (
	"errors"
	"testing"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// TestPinnedImages: images pinned by name (a short name too) or by ID are
// reported pinned and refused by Remove with FailedPrecondition, by any of
// their names or their ID; a pinned image's other tag can go, its pinned
// tag cannot; unpinned images are removed as before.
func TestPinnedImages(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	reg.push(t, "pause:3.10", imageOf(t, layer(t, file("p", "pause"))))
	reg.push(t, "app:1", imageOf(t, layer(t, file("a", "app"))))
	reg.push(t, "byid:1", imageOf(t, layer(t, file("i", "by id"))))
	reg.push(t, "free:1", imageOf(t, layer(t, file("f", "free"))))
	probe := openStore(t, reg, Options{})
	byID := pull(t, probe, reg.host+"/byid:1").ID

	s := openStore(t, reg, Options{ShortNames: ShortNames{Search: []string{reg.host}},
		Pinned: []string{"pause:3.10", reg.host + "/app:1", byID}})
	pause, app := pull(t, s, reg.host+"/pause:3.10"), pull(t, s, reg.host+"/app:1")
	pull(t, s, reg.host+"/byid:1")
	free := pull(t, s, reg.host+"/free:1")
	imgs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if want := img.ID != free.ID; img.Pinned != want {
			t.Errorf("%v: pinned %v, want %v", img.RepoTags, img.Pinned, want)
		}
	}
	for _, ref := range []string{reg.host + "/pause:3.10", pause.ID, pause.RepoDigests[0], "pause:3.10", app.ID, byID} {
		if err := s.Remove(ref); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("remove pinned %s: %v, want FailedPrecondition", ref, err)
		}
	}
	// A second tag of the pinned app may go; the pinned one stays.
	reg.push(t, "app:also", imageOf(t, layer(t, file("a", "app"))))
	pull(t, s, reg.host+"/app:also")
	if err := s.Remove(reg.host + "/app:1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("remove the pinned tag of an image with two: %v, want FailedPrecondition", err)
	}
	if err := s.Remove(reg.host + "/app:also"); err != nil {
		t.Errorf("remove the unpinned tag of a pinned image: %v", err)
	}
	if err := s.Remove(free.ID); err != nil {
		t.Errorf("remove an unpinned image: %v", err)
	}
	if got, err := s.Get(app.ID); err != nil || !got.Pinned {
		t.Errorf("the pinned image after its other tag went: %v %v", got, err)
	}
}
