package cri

import (
	"sync"
	"testing"
)

// TestNameIndexOneCreateWins: of concurrent creates of one name exactly one
// reserves it; a release frees it for the next attempt.
func TestNameIndexOneCreateWins(t *testing.T) {
	x := newNameIndex()
	name := ctrName{pod: "p", name: "app", attempt: 1}
	var wg sync.WaitGroup
	won := make(chan string, 16)
	for i := range 16 {
		wg.Go(func() {
			id := string(rune('a' + i))
			if _, ok := x.reserve(name, id); ok {
				won <- id
			}
		})
	}
	wg.Wait()
	close(won)
	var winners []string
	for id := range won {
		winners = append(winners, id)
	}
	if len(winners) != 1 {
		t.Fatalf("winners %v, want one", winners)
	}
	if holder, ok := x.reserve(name, "z"); ok || holder != winners[0] {
		t.Errorf("second reserve: %q %v", holder, ok)
	}
	if _, ok := x.reserve(ctrName{pod: "p", name: "app", attempt: 2}, "y"); !ok {
		t.Error("another attempt is another name")
	}
	x.release(winners[0])
	if _, ok := x.reserve(name, "z"); !ok {
		t.Error("released name not free")
	}
}
