package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/cri/config"
	"github.com/cri-mini/cri-mini/image"
)

const imageUsage = `usage: cri-mini image import [flags] FILE   load a docker save tarball or an OCI archive into the store
       cri-mini image pull [flags] NAME     pull an image straight into the store
       cri-mini image ls [flags]            list the images in the store
       cri-mini image rm [flags] NAME|ID    remove an image (or one of its tags)
The store is the daemon's (under --root); the daemon may be running.
`

// openImageStore opens the image store under the configured root. Only the
// daemon collects garbage: a CLI must not remove a running daemon's layers.
func openImageStore(cfg config.Config, daemon bool) (*image.Store, error) {
	return image.Open(filepath.Join(cfg.Root, "images"), image.Options{
		InsecureRegistries: cfg.InsecureRegistries,
		Mirrors:            cfg.RegistryMirrors,
		RegistryConfigPath: cfg.Image.RegistryConfigPath,
		ShortNames:         cfg.Image.ShortNames(),
		Pinned:             cfg.Image.PinnedImages,
		IgnoreImageVolumes: cfg.Image.ImageVolumes == config.ImageVolumesIgnore,
		SignaturePolicy:    cfg.Image.SignaturePolicy,
		CollectGarbage:     daemon,
		Unpack:             image.UnpackOptions{MaxBytes: cfg.MaxLayerSize},
	})
}

// imageCommand runs `cri-mini image ...`.
func imageCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, imageUsage)
		return 0
	}
	sub, args := args[0], args[1:]
	want := map[string]int{"import": 1, "pull": 1, "ls": 0, "rm": 1}
	n, ok := want[sub]
	if !ok {
		fmt.Fprintf(stderr, "cri-mini image: unknown command %q\n%s", sub, imageUsage)
		return 2
	}
	cfg, rest, code := loadConfig("cri-mini image "+sub, args, stderr)
	if code >= 0 {
		return code
	}
	if len(rest) != n {
		fmt.Fprintf(stderr, "cri-mini image %s: want %d argument(s), got %q\n%s", sub, n, rest, imageUsage)
		return 2
	}
	setVerbosity(cfg.Verbosity)
	store, err := openImageStore(cfg, false)
	if err != nil {
		fmt.Fprintf(stderr, "cri-mini image: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch sub {
	case "ls":
		err = listImages(store, stdout)
	case "rm":
		err = store.Remove(rest[0])
	case "pull", "import":
		bars := newProgress(stdout)
		var imgs []*image.Image
		if sub == "pull" {
			var img *image.Image
			if img, err = store.Pull(ctx, rest[0], image.PullOptions{Progress: bars.update}); err == nil {
				imgs = []*image.Image{img}
			}
		} else {
			imgs, err = store.Import(ctx, rest[0], bars.update)
		}
		bars.finish()
		for _, img := range imgs {
			fmt.Fprintf(stdout, "%s %s\n", img.ID, strings.Join(img.RepoTags, " "))
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "cri-mini image %s: %v\n", sub, err)
		return 1
	}
	return 0
}

func listImages(store *image.Store, w io.Writer) error {
	imgs, err := store.List()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tID\tSIZE")
	for _, img := range imgs {
		names := img.RepoTags
		if len(names) == 0 {
			names = []string{"<none>"}
		}
		for _, n := range names {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", n, strings.TrimPrefix(img.ID, "sha256:")[:13], humanBytes(img.Size))
		}
	}
	return tw.Flush()
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progress draws one bar per layer on a terminal and plain lines (one per
// finished layer) otherwise.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	order  []string
	layers map[string]image.Progress
	drawn  int // lines drawn last time (terminal)
	last   time.Time
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, layers: map[string]image.Progress{}}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) update(u image.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, seen := p.layers[u.Layer]
	if !seen {
		p.order = append(p.order, u.Layer)
	}
	if prev.Finished {
		return
	}
	p.layers[u.Layer] = u
	if !p.tty {
		if u.Finished {
			fmt.Fprintf(p.w, "layer %s done (%s)\n", short(u.Layer), humanBytes(uint64(max(u.Total, 0))))
		}
		return
	}
	if u.Finished || time.Since(p.last) > 100*time.Millisecond {
		p.last = time.Now()
		p.draw()
	}
}

func (p *progress) draw() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA", p.drawn) // back to the first bar
	}
	for _, l := range p.order {
		u := p.layers[l]
		const width = 30
		filled := width
		if !u.Finished && u.Total > 0 {
			filled = int(min(u.Done*width/u.Total, width))
		}
		state := fmt.Sprintf("%s / %s", humanBytes(uint64(max(u.Done, 0))), humanBytes(uint64(max(u.Total, 0))))
		if u.Finished {
			state = "done"
		}
		fmt.Fprintf(p.w, "\x1b[2K%s [%s%s] %s\n", short(l), strings.Repeat("=", filled), strings.Repeat(" ", width-filled), state)
	}
	p.drawn = len(p.order)
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && len(p.order) > 0 {
		p.draw()
	}
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	return d[:min(len(d), 12)]
}
