package cri

import (
	"errors"
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestSendChunks: items go in order, in slices of at most maxStreamChunk
// encoded bytes, an item larger than that alone; nothing is sent for an
// empty list; a list's error is returned as it is.
func TestSendChunks(t *testing.T) {
	item := func(id string, size int) *runtimeapi.Image {
		return &runtimeapi.Image{Id: id, RepoTags: []string{strings.Repeat("x", size)}}
	}
	items := []*runtimeapi.Image{item("a", 1<<20), item("b", 1<<20), item("c", 3<<20), item("d", 5<<20), item("e", 10)}
	var got [][]string
	err := sendChunks(items, nil, func(chunk []*runtimeapi.Image) error {
		var ids []string
		for _, c := range chunk {
			ids = append(ids, c.Id)
		}
		got = append(got, ids)
		return nil
	})
	want := [][]string{{"a", "b"}, {"c"}, {"d"}, {"e"}}
	if err != nil || !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("chunks %v, %v; want %v", got, err, want)
	}
	sent := 0
	if err := sendChunks([]*runtimeapi.Image(nil), nil, func([]*runtimeapi.Image) error { sent++; return nil }); err != nil || sent != 0 {
		t.Errorf("empty list: %d responses, %v", sent, err)
	}
	listErr := errors.New("list failed")
	if err := sendChunks(items, listErr, func([]*runtimeapi.Image) error { sent++; return nil }); err != listErr || sent != 0 {
		t.Errorf("list error: %v after %d responses", err, sent)
	}
}
