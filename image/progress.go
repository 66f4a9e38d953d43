package image

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// progressEvery is how often a pull that is still running says how far it
// got: a pull shorter than that logs only its end. (A variable: tests
// shorten it.)
var progressEvery = 10 * time.Second

// pullWatch follows one pull or import: the bytes of each layer as they
// arrive (for the caller's progress function, the daemon's log and
// metrics), and the time of the last one, to report a pull that went quiet
// and to cancel it at the stall timeout.
type pullWatch struct {
	image    string
	progress func(Progress) // the caller's (the CLI's bars); may be nil
	metrics  *metrics
	start    time.Time
	last     atomic.Int64 // unix nanoseconds of the last byte (or the start)
	bytes    atomic.Int64 // compressed bytes received

	mu       sync.Mutex
	layers   map[string]Progress // by compressed digest
	endpoint string              // the endpoint serving the pull, once known
	counted  int64               // of bytes, what the metrics have
}

func newPullWatch(image string, progress func(Progress), m *metrics) *pullWatch {
	w := &pullWatch{image: image, progress: progress, metrics: m, start: time.Now(), layers: map[string]Progress{}}
	w.last.Store(w.start.UnixNano())
	return w
}

// serving records the endpoint the pull's content comes from.
func (w *pullWatch) serving(endpoint string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.endpoint = endpoint
}

// report records a layer's progress and hands it to the caller's function.
func (w *pullWatch) report(p Progress) {
	w.mu.Lock()
	prev := w.layers[p.Layer]
	if p.Total == 0 {
		p.Done, p.Total = prev.Total, prev.Total // a layer found present, or the end of one
	}
	w.layers[p.Layer] = p
	w.mu.Unlock()
	if w.progress != nil {
		w.progress(p)
	}
}

// received counts n bytes of a layer.
func (w *pullWatch) received(n int64) {
	w.last.Store(time.Now().UnixNano())
	w.bytes.Add(n)
}

// summary is the pull's progress over its layers: bytes received and
// expected, layers finished and known, and the unfinished ones.
func (w *pullWatch) summary() (done, total int64, finished, known int, pending []Progress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.layers {
		done, total, known = done+l.Done, total+l.Total, known+1
		if l.Finished {
			finished++
		} else {
			pending = append(pending, l)
		}
	}
	slices.SortFunc(pending, func(a, b Progress) int { return int(b.Total - a.Total) })
	return done, total, finished, known, pending
}

// run watches the pull until ctx ends: every progressEvery it logs how far
// the pull got (and, at -v 2, each unfinished layer); after a tenth of the
// stall timeout without a byte it logs the stall and counts it
// (cri_mini_image_pull_stalls_total), and at the stall timeout it cancels
// the pull (DeadlineExceeded).
func (w *pullWatch) run(ctx context.Context, cancel context.CancelCauseFunc, limit time.Duration) {
	tick := time.NewTicker(min(limit/20, progressEvery/2, time.Second))
	defer tick.Stop()
	defer w.flushBytes()
	warnAfter := limit / 10
	stalled := false
	logged := w.start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			w.flushBytes()
			idle := now.Sub(time.Unix(0, w.last.Load()))
			if idle > limit {
				cancel(fmt.Errorf("no progress for %s (stall timeout %s): %w", idle.Round(time.Second), limit, errdefs.ErrDeadlineExceeded))
				return
			}
			switch {
			case idle >= warnAfter && !stalled:
				stalled = true
				w.metrics.stalls.Inc()
				done, total, finished, known, pending := w.summary()
				klog.InfoS("Pull stalled: no byte received", "image", w.image, "endpoint", w.endpointName(), "idle", idle.Round(time.Millisecond),
					"cancelledAfter", limit, "bytes", done, "total", total, "layersDone", finished, "layers", known, "waitingOn", digests(pending))
			case idle < warnAfter && stalled:
				stalled = false
				klog.InfoS("Pull resumed", "image", w.image, "endpoint", w.endpointName())
			}
			if now.Sub(logged) >= progressEvery {
				logged = now
				w.logProgress(now)
			}
		}
	}
}

func (w *pullWatch) logProgress(now time.Time) {
	done, total, finished, known, pending := w.summary()
	elapsed := now.Sub(w.start)
	klog.InfoS("Pulling image", "image", w.image, "endpoint", w.endpointName(), "bytes", done, "total", total,
		"layersDone", finished, "layers", known, "elapsed", elapsed.Round(time.Second),
		"bytesPerSecond", int64(float64(w.bytes.Load())/elapsed.Seconds()))
	for _, l := range pending {
		klog.V(2).InfoS("Pulling layer", "image", w.image, "layer", l.Layer, "bytes", l.Done, "total", l.Total)
	}
}

func (w *pullWatch) endpointName() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.endpoint
}

// flushBytes adds the bytes received since the last call to
// cri_mini_image_pull_bytes_total (every tick, not every read).
func (w *pullWatch) flushBytes() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.bytes.Load(); n > w.counted {
		w.metrics.bytes.Add(float64(n - w.counted))
		w.counted = n
	}
}

func digests(ls []Progress) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Layer
	}
	return out
}

// countingReader counts a layer's compressed bytes for the watch.
type countingReader struct {
	r      io.Reader
	watch  *pullWatch
	total  int64
	digest string
	done   atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		done := c.done.Add(int64(n))
		c.watch.received(int64(n))
		c.watch.report(Progress{Layer: c.digest, Done: done, Total: c.total})
	}
	return n, err
}
