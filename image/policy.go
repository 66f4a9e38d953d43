package image

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// A signature policy is a containers-policy.json(5) file, as CRI-O and
// podman read it, for the "docker" transport: requirements by scope (a
// registry, a namespace, a repository, a tag, "*.example.com"), the most
// specific scope winning, else the transport's "" scope, else "default".
// Every requirement of the list must hold. cri-mini takes:
//
//	{"type": "insecureAcceptAnything"}
//	{"type": "reject"}
//	{"type": "sigstoreSigned", "keyPath": "/etc/pki/cosign.pub",   (or keyPaths, keyData, keyDatas)
//	 "signedIdentity": {"type": "matchRepoDigestOrExact"}}          (the default; matchRepository,
//	                                                                  matchExact, exactReference,
//	                                                                  exactRepository)
//
// A sigstore signature is looked up as cosign stores it, beside the image
// on the endpoint that serves it: the tag "sha256-<hex>.sig" of the image's
// repository, else the image's OCI referrers of the cosign signature
// artifact type. The public-key verification is sigstore's own library's
// (github.com/sigstore/sigstore/pkg/signature).

// maxPolicyFile bounds what is read of a policy file or a key.
const maxPolicyFile = 1 << 20

// Cosign's names for its signatures.
const (
	cosignSignatureAnnotation = "dev.cosignproject.cosign/signature"
	cosignSimpleSigningType   = "application/vnd.dev.cosign.simplesigning.v1+json"
	cosignArtifactType        = "application/vnd.dev.cosign.artifact.sig.v1+json"
)

// Caps on what an image's signatures may be: a registry serves them.
const (
	maxSignatures       = 64
	maxSignaturePayload = 64 << 10
)

// storedSignature is a sigstore signature as fetched: the signed payload
// (simple signing JSON) and the base64 signature over it. Kept with the
// image, so the policy can be checked again (at CreateContainer, after a
// change of policy) without the registry.
type storedSignature struct {
	Payload   []byte `json:"payload"`
	Signature string `json:"signature"`
}

// pullRecord is what a pull established: the name pulled, the digest it
// resolved to, the signatures found there and what the policy said.
type pullRecord struct {
	Name       string            `json:"name"`
	Digest     string            `json:"digest"`
	Signatures []storedSignature `json:"signatures,omitempty"`
	Verdict    string            `json:"verdict"`
}

// requirement is one entry of a policy's list.
type requirement struct {
	kind     string // insecureAcceptAnything, reject or sigstoreSigned
	keys     []signature.Verifier
	keyIDs   []string // SHA-256 of each key's DER form, for messages
	identity identityRule
}

// identityRule is a sigstoreSigned requirement's signedIdentity.
type identityRule struct {
	Type             string `json:"type"`
	DockerReference  string `json:"dockerReference,omitempty"`
	DockerRepository string `json:"dockerRepository,omitempty"`
}

// policy is a parsed policy file.
type policy struct {
	file   string
	def    []requirement
	scopes map[string][]requirement // the docker transport's, "" included
}

// policyFile is the file as written.
type policyFile struct {
	Default    []json.RawMessage                       `json:"default"`
	Transports map[string]map[string][]json.RawMessage `json:"transports"`
}

// parsePolicy reads a policy file's bytes; key files are read through readKey.
func parsePolicy(file string, data []byte, readKey func(string) ([]byte, error)) (*policy, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("signature policy %s: %s: %w", file, fmt.Sprintf(format, args...), errdefs.ErrFailedPrecondition)
	}
	var f policyFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, bad("%v", err)
	}
	if len(f.Default) == 0 {
		return nil, bad(`"default" must list at least one requirement (as containers-policy.json requires)`)
	}
	p := &policy{file: file, scopes: map[string][]requirement{}}
	var err error
	if p.def, err = parseRequirements(f.Default, readKey); err != nil {
		return nil, bad("default: %v", err)
	}
	for transport, scopes := range f.Transports {
		if transport != "docker" {
			klog.V(1).InfoS("Signature policy: only the docker transport applies to a CRI runtime; ignoring", "file", file, "transport", transport)
			continue
		}
		for scope, reqs := range scopes {
			if err := checkScope(scope); err != nil {
				return nil, bad("docker scope %q: %v", scope, err)
			}
			if len(reqs) == 0 {
				return nil, bad("docker scope %q lists no requirement", scope)
			}
			if p.scopes[scope], err = parseRequirements(reqs, readKey); err != nil {
				return nil, bad("docker scope %q: %v", scope, err)
			}
		}
	}
	return p, nil
}

func parseRequirements(raws []json.RawMessage, readKey func(string) ([]byte, error)) ([]requirement, error) {
	out := make([]requirement, 0, len(raws))
	for i, raw := range raws {
		r, err := parseRequirement(raw, readKey)
		if err != nil {
			return nil, fmt.Errorf("requirement %d: %w", i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseRequirement(raw json.RawMessage, readKey func(string) ([]byte, error)) (requirement, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return requirement{}, err
	}
	strict := func(v any) error {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
	var none struct {
		Type string `json:"type"`
	}
	switch head.Type {
	case "insecureAcceptAnything", "reject":
		if err := strict(&none); err != nil {
			return requirement{}, fmt.Errorf("%s: %w", head.Type, err)
		}
		return requirement{kind: head.Type}, nil
	case "sigstoreSigned":
		var s struct {
			Type           string        `json:"type"`
			KeyPath        string        `json:"keyPath"`
			KeyPaths       []string      `json:"keyPaths"`
			KeyData        string        `json:"keyData"`
			KeyDatas       []string      `json:"keyDatas"`
			SignedIdentity *identityRule `json:"signedIdentity"`
		}
		if err := strict(&s); err != nil {
			return requirement{}, fmt.Errorf("sigstoreSigned: %w (cri-mini verifies sigstore signatures by public key: keyPath, keyPaths, keyData, keyDatas; not fulcio, rekor or pki)", err)
		}
		var pems [][]byte
		for _, p := range append(slices.Clone(s.KeyPaths), s.KeyPath) {
			if p == "" {
				continue
			}
			if !filepath.IsAbs(p) {
				return requirement{}, fmt.Errorf("sigstoreSigned: key path %q is not absolute", p)
			}
			data, err := readKey(p)
			if err != nil {
				return requirement{}, fmt.Errorf("sigstoreSigned: key %s: %w", p, err)
			}
			pems = append(pems, data)
		}
		for _, d := range append(slices.Clone(s.KeyDatas), s.KeyData) {
			if d == "" {
				continue
			}
			data, err := base64.StdEncoding.DecodeString(d)
			if err != nil {
				return requirement{}, fmt.Errorf("sigstoreSigned: keyData is not base64: %w", err)
			}
			pems = append(pems, data)
		}
		if len(pems) == 0 {
			return requirement{}, errors.New("sigstoreSigned: no public key (keyPath, keyPaths, keyData or keyDatas)")
		}
		r := requirement{kind: head.Type, identity: identityRule{Type: "matchRepoDigestOrExact"}}
		if s.SignedIdentity != nil {
			r.identity = *s.SignedIdentity
		}
		if err := r.identity.check(); err != nil {
			return requirement{}, fmt.Errorf("sigstoreSigned: signedIdentity: %w", err)
		}
		for _, pemData := range pems {
			pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemData)
			if err != nil {
				return requirement{}, fmt.Errorf("sigstoreSigned: public key: %w", err)
			}
			v, err := signature.LoadVerifier(pub, crypto.SHA256)
			if err != nil {
				return requirement{}, fmt.Errorf("sigstoreSigned: public key: %w", err)
			}
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				return requirement{}, fmt.Errorf("sigstoreSigned: public key: %w", err)
			}
			sum := sha256.Sum256(der)
			r.keys, r.keyIDs = append(r.keys, v), append(r.keyIDs, "SHA256:"+hex.EncodeToString(sum[:8]))
		}
		return r, nil
	case "signedBy", "prSignedBy":
		return requirement{}, fmt.Errorf("%s (GPG signatures) is not supported by cri-mini: use sigstoreSigned", head.Type)
	}
	return requirement{}, fmt.Errorf("unknown requirement type %q (want insecureAcceptAnything, reject or sigstoreSigned)", head.Type)
}

func (r identityRule) check() error {
	switch r.Type {
	case "matchRepoDigestOrExact", "matchRepository", "matchExact":
		if r.DockerReference != "" || r.DockerRepository != "" {
			return fmt.Errorf("%s takes no dockerReference or dockerRepository", r.Type)
		}
	case "exactReference":
		ref, err := ParseReference(r.DockerReference)
		if err != nil || IsShortName(r.DockerReference) || (ref.Tag() == "" && ref.Digest() == "") || r.DockerRepository != "" {
			return fmt.Errorf("exactReference wants a full dockerReference with a tag or digest, not %q", r.DockerReference)
		}
	case "exactRepository":
		ref, err := ParseReference(r.DockerRepository)
		if err != nil || IsShortName(r.DockerRepository) || ref.Name() != r.DockerRepository && ref.String() != r.DockerRepository+":latest" || r.DockerReference != "" {
			return fmt.Errorf("exactRepository wants a full dockerRepository without tag or digest, not %q", r.DockerRepository)
		}
	case "remapIdentity":
		return errors.New("remapIdentity is not supported by cri-mini")
	default:
		return fmt.Errorf("unknown type %q", r.Type)
	}
	return nil
}

// checkScope accepts the docker transport's scopes: "" (the transport's
// default), "*.domain", or host[:port][/path][:tag|@digest].
func checkScope(scope string) error {
	if scope == "" {
		return nil
	}
	if rest, ok := strings.CutPrefix(scope, "*."); ok {
		if rest == "" || strings.ContainsAny(rest, "/:*@") {
			return errors.New("a wildcard scope is *.domain")
		}
		return nil
	}
	if !strings.Contains(scope, "/") {
		if IsShortName(scope+"/x") || strings.ContainsAny(scope, "@*") {
			return errors.New("a scope is a registry host (with a dot or a port, or localhost), a namespace or repository below one, or *.domain")
		}
		return nil
	}
	if IsShortName(scope) {
		return errors.New("a scope starts with a registry host (docker.io/library/busybox, not library/busybox)")
	}
	if _, err := ParseReference(scope); err != nil {
		return err
	}
	return nil
}

// requirementsFor are the requirements of the most specific scope that
// covers ref, and that scope ("default" when none does).
func (p *policy) requirementsFor(ref Reference) ([]requirement, string) {
	cands := []string{ref.String(), ref.Name()}
	for n := ref.Name(); strings.Contains(n, "/"); {
		n = n[:strings.LastIndex(n, "/")]
		cands = append(cands, n)
	}
	host := ref.Registry()
	if h, _, err := splitHostPort(host); err == nil {
		for labels := strings.Split(h, "."); len(labels) > 1; labels = labels[1:] {
			cands = append(cands, "*."+strings.Join(labels[1:], "."))
		}
	}
	cands = append(cands, "")
	for _, c := range cands {
		if reqs, ok := p.scopes[c]; ok {
			return reqs, fmt.Sprintf("docker scope %q", c)
		}
	}
	return p.def, "default"
}

func splitHostPort(hostport string) (string, string, error) {
	if i := strings.LastIndex(hostport, ":"); i > 0 && !strings.Contains(hostport[i:], "]") {
		return hostport[:i], hostport[i+1:], nil
	}
	return hostport, "", nil
}

// needsSignatures tells whether any requirement looks at signatures.
func needsSignatures(reqs []requirement) bool {
	return slices.ContainsFunc(reqs, func(r requirement) bool { return r.kind == "sigstoreSigned" })
}

// evaluate checks every requirement for the image ref resolved to digest
// (its top-level manifest, the one cosign signs) with the signatures found;
// it returns what held, or why the image is refused (FailedPrecondition).
func (p *policy) evaluate(ref Reference, digest string, sigs []storedSignature) (string, error) {
	reqs, scope := p.requirementsFor(ref)
	var verdicts []string
	for _, r := range reqs {
		switch r.kind {
		case "insecureAcceptAnything":
			verdicts = append(verdicts, "accepted (insecureAcceptAnything)")
		case "reject":
			return "", fmt.Errorf("image %s is rejected by the signature policy %s (%s): %w", ref, p.file, scope, errdefs.ErrFailedPrecondition)
		case "sigstoreSigned":
			key, err := r.verify(ref, digest, sigs)
			if err != nil {
				return "", fmt.Errorf("image %s (%s) is not allowed by the signature policy %s (%s): %v: %w", ref, digest, p.file, scope, err, errdefs.ErrFailedPrecondition)
			}
			verdicts = append(verdicts, "sigstoreSigned by key "+key)
		}
	}
	return strings.Join(verdicts, "; "), nil
}

// verify finds a signature that one of r's keys made over a payload naming
// digest and an identity r's signedIdentity accepts for ref; it returns
// the key's ID.
func (r requirement) verify(ref Reference, digest string, sigs []storedSignature) (string, error) {
	if len(sigs) == 0 {
		return "", errors.New("it has no sigstore signature")
	}
	var why []string
	for i, s := range sigs {
		raw, err := base64.StdEncoding.DecodeString(s.Signature)
		if err != nil {
			why = append(why, fmt.Sprintf("signature %d is not base64", i+1))
			continue
		}
		key := ""
		for k, v := range r.keys {
			if v.VerifySignature(bytes.NewReader(raw), bytes.NewReader(s.Payload)) == nil {
				key = r.keyIDs[k]
				break
			}
		}
		if key == "" {
			why = append(why, fmt.Sprintf("signature %d is by none of the keys %s", i+1, strings.Join(r.keyIDs, ", ")))
			continue
		}
		var p payload.SimpleContainerImage
		if err := json.Unmarshal(s.Payload, &p); err != nil {
			why = append(why, fmt.Sprintf("signature %d: payload: %v", i+1, err))
			continue
		}
		switch {
		case p.Critical.Type != payload.CosignSignatureType:
			why = append(why, fmt.Sprintf("signature %d is of type %q", i+1, p.Critical.Type))
		case p.Critical.Image.DockerManifestDigest != digest:
			why = append(why, fmt.Sprintf("signature %d is for %s", i+1, p.Critical.Image.DockerManifestDigest))
		default:
			if err := r.identity.accepts(ref, p.Critical.Identity.DockerReference); err != nil {
				why = append(why, fmt.Sprintf("signature %d: %v", i+1, err))
				continue
			}
			return key, nil
		}
	}
	return "", errors.New(strings.Join(why, "; "))
}

// accepts tells whether a signature's claimed identity fits the rule for
// the image pulled as ref.
func (r identityRule) accepts(ref Reference, claimed string) error {
	signed, err := ParseReference(claimed)
	if err != nil {
		return fmt.Errorf("signed identity %q: %v", claimed, err)
	}
	// An identity without tag or digest names a repository only (cosign
	// writes such by default): it is never an exact match.
	_, suffix := splitTagOrDigest(claimed)
	exact := suffix != "" && signed.String() == ref.String()
	ok := false
	switch r.Type {
	case "matchRepoDigestOrExact":
		if ref.Digest() != "" {
			ok = signed.Name() == ref.Name()
		} else {
			ok = exact
		}
	case "matchRepository":
		ok = signed.Name() == ref.Name()
	case "matchExact":
		ok = ref.Digest() == "" && exact
	case "exactReference":
		want, _ := ParseReference(r.DockerReference)
		ok = suffix != "" && signed.String() == want.String()
	case "exactRepository":
		want, _ := ParseReference(r.DockerRepository)
		ok = signed.Name() == want.Name()
	}
	if !ok {
		return fmt.Errorf("signed identity %s does not match %s (%s)", signed, ref, r.Type)
	}
	return nil
}

// policies holds the policy file, read again when it or a key changed.
type policies struct {
	file string // "" when no policy is configured

	mu      sync.Mutex
	current *policy
	files   []fileStamp
}

// get returns the current policy (nil with none configured), reading the
// file again if it or one of its keys changed. A broken file is an error:
// nothing is pulled or started under a policy that cannot be read.
func (ps *policies) get() (*policy, error) {
	if ps.file == "" {
		return nil, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.current != nil && !stampsChanged(ps.files) {
		return ps.current, nil
	}
	files := []fileStamp{stamp(ps.file)}
	data, err := fsutil.ReadRegularFile(ps.file, maxPolicyFile)
	if err != nil {
		return nil, fmt.Errorf("signature policy: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	p, err := parsePolicy(ps.file, data, func(key string) ([]byte, error) {
		files = append(files, stamp(key))
		return fsutil.ReadRegularFile(key, maxPolicyFile)
	})
	if err != nil {
		return nil, err
	}
	if ps.current != nil {
		klog.InfoS("Signature policy changed; read again", "file", ps.file)
	}
	ps.current, ps.files = p, files
	return p, nil
}
