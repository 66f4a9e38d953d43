package cri

import (
	"io"
	"testing"
)

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestCappedBufferKeepsTheCapThroughIOCopy: io.Copy, as os/exec uses it for
// an exec's output, must go through the capped Write (a buffer embedding
// bytes.Buffer offered ReadFrom and kept everything).
func TestCappedBufferKeepsTheCapThroughIOCopy(t *testing.T) {
	const max, total = 1 << 20, 64 << 20
	b := &cappedBuffer{max: max}
	n, err := io.Copy(b, io.LimitReader(zeroReader{}, total))
	if err != nil || n != total {
		t.Fatalf("copied %d %v, want all %d consumed", n, err, total)
	}
	if len(b.buf) != max || cap(b.buf) > 2*max || b.dropped != total-max {
		t.Errorf("kept %d (capacity %d), dropped %d; want %d kept, %d dropped", len(b.buf), cap(b.buf), b.dropped, max, total-max)
	}
	if maxExecSyncOutput*2+64 > maxMsgSize {
		t.Errorf("stdout and stderr at the cap (%d each) do not fit a %d-byte message", maxExecSyncOutput, maxMsgSize)
	}
}
