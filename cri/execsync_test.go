package cri

import (
	"io"
	"testing"
)

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestCappedBufferKeepsTheCapThroughIOCopy: io.Copy, as os/exec uses it for
// an exec's output, must go through the capped Write (a buffer embedding
// bytes.Buffer offered ReadFrom and kept everything); stdout and stderr
// share the cap, and a big output's buffer is never larger than it.
func TestCappedBufferKeepsTheCapThroughIOCopy(t *testing.T) {
	const max, total = 4 << 20, 64 << 20
	budget := &outputBudget{left: max}
	stderr := &cappedBuffer{budget: budget}
	if _, err := stderr.Write([]byte("warning\n")); err != nil {
		t.Fatal(err)
	}
	stdout := &cappedBuffer{budget: budget}
	n, err := io.Copy(stdout, io.LimitReader(zeroReader{}, total))
	if err != nil || n != total {
		t.Fatalf("copied %d %v, want all %d consumed", n, err, total)
	}
	kept := max - len("warning\n")
	if len(stdout.buf) != kept || cap(stdout.buf) > max || string(stderr.buf) != "warning\n" || budget.dropped != total-int64(kept) {
		t.Errorf("stdout kept %d (capacity %d), stderr %q, dropped %d; want %d kept, %d dropped",
			len(stdout.buf), cap(stdout.buf), stderr.buf, budget.dropped, kept, total-kept)
	}
	if maxExecSyncOutput+64 > maxMsgSize {
		t.Errorf("output at the cap (%d bytes) does not fit a %d-byte message", maxExecSyncOutput, maxMsgSize)
	}
}
