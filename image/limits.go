package image

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// The JSON documents of an image are untrusted and end up in memory (the
// index keeps every config, each container's spec copies the config's
// environment and command, verbose statuses show both): they are bounded
// when an image is pulled or imported.
//
//   - A manifest or index: 4 MiB, as containerd's MaxManifestSize and the
//     distribution registry's own limit on manifests it accepts.
//   - A config: 4 MiB, as containers/image's MaxConfigBodySize, under
//     which CRI-O and podman read configs. Real ones are a few KiB (tens
//     with a long history). With it, a container's verbose status stays
//     near 8 MiB at most, well under the 16 MiB of a CRI message.
const (
	maxManifestBytes = 4 << 20
	maxConfigBytes   = 4 << 20
)

// tooLarge is the error for a document of size bytes (-1: more than
// limit, still arriving) over its cap.
func tooLarge(what string, size, limit int64) error {
	if size < 0 {
		return fmt.Errorf("the image's %s is larger than %d bytes (%d MiB), the most cri-mini accepts: %w",
			what, limit, limit>>20, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("the image's %s is %d bytes; cri-mini accepts at most %d (%d MiB): %w",
		what, size, limit, limit>>20, errdefs.ErrInvalidArgument)
}

// checkConfig refuses a config over the cap, or one that is not UTF-8 (as
// JSON must be): decoding would replace each bad byte by a three-byte
// U+FFFD, tripling what every copy of it weighs.
func checkConfig(raw []byte) error {
	if len(raw) > maxConfigBytes {
		return tooLarge("config", int64(len(raw)), maxConfigBytes)
	}
	if !utf8.Valid(raw) {
		return fmt.Errorf("the image's config is not UTF-8 text, as JSON must be: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// limitManifest bounds a registry's answer to a manifest request: a
// declared length over the cap fails at once, and a body that runs past
// it (chunked, or lying) fails at the first byte over.
func limitManifest(req *http.Request, resp *http.Response) (*http.Response, error) {
	if req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/manifests/") {
		return resp, nil
	}
	if resp.ContentLength > maxManifestBytes {
		resp.Body.Close()
		return nil, fmt.Errorf("registry %s: %w", req.URL.Host, tooLarge("manifest", resp.ContentLength, maxManifestBytes))
	}
	resp.Body = &cappedBody{ReadCloser: resp.Body, left: maxManifestBytes, host: req.URL.Host}
	return resp, nil
}

// cappedBody reads at most left bytes of a body and fails past them.
type cappedBody struct {
	io.ReadCloser
	left int64
	host string
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) > b.left {
		return 0, fmt.Errorf("registry %s: %w", b.host, tooLarge("manifest", -1, maxManifestBytes))
	}
	b.left -= int64(n)
	return n, err
}

// checkSizes refuses an image whose manifest or declared config size is
// over its cap, before the config is fetched (a registry sends no more
// than the size the manifest declares).
func checkSizes(img v1.Image) error {
	raw, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", classify(err))
	}
	if len(raw) > maxManifestBytes {
		return tooLarge("manifest", int64(len(raw)), maxManifestBytes)
	}
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("manifest: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if m.Config.Size > maxConfigBytes {
		return tooLarge("config", m.Config.Size, maxConfigBytes)
	}
	return nil
}
