package image

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var chainID = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// FuzzDecodeConfig feeds untrusted image configs through what a pull does
// with them: the size and encoding check, the decoder, the chain IDs that
// name layer directories. Nothing panics, and an accepted config names
// only directories directly below the store's layers directory.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"architecture":"amd64","os":"linux","config":{"User":"1000","Env":["PATH=/bin"]},`+
		`"rootfs":{"type":"layers","diff_ids":["sha256:`+string(bytes.Repeat([]byte("ab"), 32))+`"]}}`), uint8(1))
	f.Add([]byte(`{"rootfs":{"diff_ids":["sha256:../../etc","sha512:00"]}}`), uint8(2))
	f.Add([]byte(`{"rootfs":{"diff_ids":["sha256:`+string(bytes.Repeat([]byte("0"), 64))+`/.."]}}`), uint8(1))
	f.Add([]byte("{\"config\":{\"Env\":[\"\xff\"]}}"), uint8(0))
	s := &Store{root: "/var/lib/cri-mini"}
	f.Fuzz(func(t *testing.T, raw []byte, layers uint8) {
		if checkConfig(raw) != nil {
			return
		}
		cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
		if err != nil {
			return
		}
		if _, err := json.Marshal(cfg); err != nil {
			t.Fatalf("an accepted config does not encode again: %v", err)
		}
		chains, err := chainIDs(cfg, int(layers%8))
		if err != nil {
			return
		}
		for _, c := range chains {
			if !chainID.MatchString(c) {
				t.Fatalf("chain ID %q", c)
			}
			if dir := s.layerDir(c); filepath.Dir(dir) != "/var/lib/cri-mini/layers" {
				t.Fatalf("layer directory %s is not directly below the store's layers", dir)
			}
		}
	})
}
