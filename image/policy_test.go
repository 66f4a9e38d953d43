package image

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/registrytest"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// writePolicy writes a policy file (atomically: renamed into place).
func writePolicy(t *testing.T, file, content string) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// TestSignaturePolicyAtPull: a containers-policy.json enforced at pull, per
// scope: a sigstore signature by the test's key (cosign's tag scheme, and
// its referrers scheme) admits the image; unsigned, signed by another key,
// a signature of another digest, or a tag when only the repository is
// signed (matchRepoDigestOrExact) are refused with FailedPrecondition before
// any layer is fetched; "reject" refuses, "insecureAcceptAnything" admits.
func TestSignaturePolicyAtPull(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	key, other := registrytest.NewKey(t), registrytest.NewKey(t)
	images := map[string]v1.Image{}
	digests := map[string]v1.Hash{}
	for _, repo := range []string{"signed", "referred", "unsigned", "otherkey", "wrongdigest", "exact", "open", "elsewhere"} {
		images[repo] = imageOf(t, layer(t, file("repo", repo)))
		reg.push(t, repo+":1", images[repo])
		digests[repo], _ = images[repo].Digest()
	}
	reg.Sign(t, "signed", digests["signed"], key, "", false)
	reg.Sign(t, "referred", digests["referred"], key, "", true)
	reg.Sign(t, "otherkey", digests["otherkey"], other, "", false)
	reg.Sign(t, "wrongdigest", digests["signed"], key, "", false) // a valid signature of another image
	reg.push(t, "wrongdigest:"+digests["wrongdigest"].Algorithm+"-"+digests["wrongdigest"].Hex+".sig", mustImage(reg.image("wrongdigest:"+digests["signed"].Algorithm+"-"+digests["signed"].Hex+".sig")))
	reg.Sign(t, "exact", digests["exact"], key, "", false)
	policyFile := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, policyFile, strings.ReplaceAll(strings.ReplaceAll(`{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {
      "REG": [{"type": "sigstoreSigned", "keyPath": "KEY", "signedIdentity": {"type": "matchRepository"}}],
      "REG/exact": [{"type": "sigstoreSigned", "keyPath": "KEY"}],
      "REG/open": [{"type": "insecureAcceptAnything"}],
      "REG/elsewhere": [{"type": "reject"}]
    },
    "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}
  }
}`, "REG", reg.host), "KEY", key.PubFile))
	s := openStore(t, reg, Options{SignaturePolicy: policyFile})
	if err := s.CheckConfig(); err != nil {
		t.Fatalf("CheckConfig: %v", err)
	}
	for _, c := range []struct {
		ref  string
		says string // "" when admitted
	}{
		{"signed:1", ""},
		{"referred:1", ""},
		{"unsigned:1", "has no sigstore signature"},
		{"otherkey:1", "by none of the keys"},
		{"wrongdigest:1", "is for " + digests["signed"].String()},
		{"exact:1", "does not match"},
		{"exact@" + digests["exact"].String(), ""},
		{"open:1", ""},
		{"elsewhere:1", "rejected"},
	} {
		repo, _, _ := strings.Cut(strings.Replace(c.ref, "@", ":", 1), ":")
		before := reg.blobGets(mustLayerDigest(t, images[repo]))
		img, err := tryPull(s, reg.host+"/"+c.ref)
		switch {
		case c.says == "" && err != nil:
			t.Errorf("%s: %v, want admitted", c.ref, err)
		case c.says == "" && !strings.Contains(img.Verifications[len(img.Verifications)-1].Verdict, "accepted") &&
			!strings.Contains(img.Verifications[len(img.Verifications)-1].Verdict, "sigstoreSigned by key SHA256:"):
			t.Errorf("%s: verdict %+v", c.ref, img.Verifications)
		case c.says != "" && (!errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%s: %v, want FailedPrecondition saying %q", c.ref, err, c.says)
		case c.says != "" && reg.blobGets(mustLayerDigest(t, images[repo])) != before:
			t.Errorf("%s: a layer of a refused image was fetched", c.ref)
		}
	}
}

func mustImage(img v1.Image, err error) v1.Image {
	if err != nil {
		panic(err)
	}
	return img
}

func mustLayerDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[len(ls)-1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestSignaturePolicyAtCreate: the policy as it is now applies to images
// already in the store (CheckPolicy, which CreateContainer calls): an image
// admitted at pull is refused once the policy rejects its scope, and
// admitted again when it is restored, without reopening the store; the
// signatures found at pull are what is checked; an imported image (no
// pull) passes only a policy that accepts its name without signatures.
func TestSignaturePolicyAtCreate(t *testing.T) {
	roottest.Require(t)
	reg := newTestRegistry(t)
	key := registrytest.NewKey(t)
	img := imageOf(t, layer(t, file("a", "signed")))
	reg.push(t, "app:1", img)
	d, _ := img.Digest()
	reg.Sign(t, "app", d, key, reg.host+"/app:1", false)
	policyFile := filepath.Join(t.TempDir(), "policy.json")
	signed := `{"default": [{"type": "reject"}], "transports": {"docker": {"` + reg.host + `/app": [{"type": "sigstoreSigned", "keyPath": "` + key.PubFile + `"}]}}}`
	writePolicy(t, policyFile, signed)
	s := openStore(t, reg, Options{SignaturePolicy: policyFile})
	got := pull(t, s, reg.host+"/app:1")
	if err := s.CheckPolicy(got.ID); err != nil {
		t.Fatalf("CheckPolicy right after the pull: %v", err)
	}
	writePolicy(t, policyFile, `{"default": [{"type": "reject"}]}`)
	if err := s.CheckPolicy(got.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "rejected") {
		t.Errorf("CheckPolicy after the scope became reject: %v, want FailedPrecondition", err)
	}
	other := registrytest.NewKey(t)
	writePolicy(t, policyFile, strings.ReplaceAll(signed, key.PubFile, other.PubFile))
	if err := s.CheckPolicy(got.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "by none of the keys") {
		t.Errorf("CheckPolicy after the key changed: %v, want FailedPrecondition", err)
	}
	writePolicy(t, policyFile, signed)
	if err := s.CheckPolicy(got.ID); err != nil {
		t.Errorf("CheckPolicy with the policy restored: %v", err)
	}

	archive := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.MultiRefWriteToFile(archive, map[name.Reference]v1.Image{
		name.MustParseReference("imported.local/app:1"): imageOf(t, layer(t, file("i", "imported"))),
	}); err != nil {
		t.Fatal(err)
	}
	imported, err := s.Import(context.Background(), archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckPolicy(imported[0].ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("an imported image under default reject: %v, want FailedPrecondition", err)
	}
	writePolicy(t, policyFile, `{"default": [{"type": "reject"}], "transports": {"docker": {"imported.local": [{"type": "insecureAcceptAnything"}]}}}`)
	if err := s.CheckPolicy(imported[0].ID); err != nil {
		t.Errorf("an imported image its scope accepts: %v", err)
	}
}

// TestSignaturePolicyFileErrors: what cri-mini cannot enforce is an error
// naming the requirement, at the daemon's start (CheckConfig).
func TestSignaturePolicyFileErrors(t *testing.T) {
	key := registrytest.NewKey(t)
	for content, says := range map[string]string{
		`{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]}`: "signedBy",
		`{"default": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/ca.pem"}}]}`:     "fulcio",
		`{"default": [{"type": "sigstoreSigned", "keyPath": "cosign.pub"}]}`:             "not absolute",
		`{"default": [{"type": "sigstoreSigned"}]}`:                                      "no public key",
		`{"default": []}`:                   `"default"`,
		`{"default": [{"type": "accept"}]}`: `unknown requirement type "accept"`,
		`{"default": [{"type": "reject"}], "transports": {"docker": {"busybox": [{"type": "reject"}]}}}`:           "registry host",
		`{"default": [{"type": "sigstoreSigned", "keyPath": "KEY", "signedIdentity": {"type": "remapIdentity"}}]}`: "remapIdentity",
		`{"default": [{"type": "reject"}], "unknown": 1}`:                                                          "unknown",
	} {
		f := filepath.Join(t.TempDir(), "policy.json")
		writePolicy(t, f, strings.ReplaceAll(content, "KEY", key.PubFile))
		s := openStore(t, nil, Options{SignaturePolicy: f})
		if err := s.CheckConfig(); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), says) || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: %v, want FailedPrecondition naming the file and %s", content, err, says)
		}
	}
}

func TestPolicyScopes(t *testing.T) {
	p := &policy{def: []requirement{{kind: "default"}}, scopes: map[string][]requirement{}}
	for _, s := range []string{"", "*.example.com", "*.b.example.com", "reg.b.example.com", "reg.b.example.com/ns", "reg.b.example.com/ns/app", "reg.b.example.com/ns/app:1", "docker.io/library"} {
		p.scopes[s] = []requirement{{kind: s}}
	}
	for ref, want := range map[string]string{
		"reg.b.example.com/ns/app:1":                 "reg.b.example.com/ns/app:1",
		"reg.b.example.com/ns/app:2":                 "reg.b.example.com/ns/app",
		"reg.b.example.com/ns/other:1":               "reg.b.example.com/ns",
		"reg.b.example.com/x:1":                      "reg.b.example.com",
		"other.b.example.com/x:1":                    "*.b.example.com",
		"c.example.com:5000/x:1":                     "*.example.com",
		"quay.io/x:1":                                "",
		"docker.io/library/busybox:1":                "docker.io/library",
		"reg.b.example.com/ns/app@sha256:" + zeros64: "reg.b.example.com/ns/app",
	} {
		r, err := ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		if reqs, _ := p.requirementsFor(r); reqs[0].kind != want {
			t.Errorf("%s: scope %q, want %q", ref, reqs[0].kind, want)
		}
	}
}

// FuzzPolicyFile: the policy parser takes any bytes without panicking, and
// refuses with FailedPrecondition.
func FuzzPolicyFile(f *testing.F) {
	for _, seed := range []string{
		`{"default": [{"type": "insecureAcceptAnything"}]}`,
		`{"default": [{"type": "reject"}], "transports": {"docker": {"docker.io/library": [{"type": "sigstoreSigned", "keyPath": "/k.pub", "signedIdentity": {"type": "matchRepository"}}], "*.example.com": [{"type": "insecureAcceptAnything"}]}}}`,
		`{"default": [{"type": "sigstoreSigned", "keyData": "bm90IGEga2V5", "signedIdentity": {"type": "exactReference", "dockerReference": "quay.io/a/b:1"}}]}`,
		`{"default": [{"type": "signedBy"}]}`, `{"default": null}`, `[]`, `{"transports": {"docker": {"": []}}}`,
	} {
		f.Add([]byte(seed))
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	key, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parsePolicy("/etc/cri-mini/policy.json", data, func(string) ([]byte, error) { return key, nil })
		if err != nil {
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("error without its kind: %v", err)
			}
			return
		}
		if len(p.def) == 0 {
			t.Fatal("accepted without a default")
		}
		ref, _ := ParseReference("docker.io/library/busybox:1")
		_, _ = p.evaluate(ref, "sha256:"+zeros64, []storedSignature{{Payload: data, Signature: "AAAA"}})
	})
}
