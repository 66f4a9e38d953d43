// Package registrytest serves go-containerregistry's registry on loopback
// for tests: over plain HTTP, or HTTPS with a certificate of a CA made for
// the test (demanding a client certificate for mTLS), with its API at
// another root than /v2 if wanted, and a log of every request it got; and
// signs images in it as cosign does, with a key made for the test.
package registrytest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// PKI is a CA made for one test, a server certificate it signed for
// 127.0.0.1 and a client certificate, with their PEM files in Dir.
type PKI struct {
	Dir                           string
	CAFile, ClientCert, ClientKey string
	Pool                          *x509.CertPool
	Server, Client                tls.Certificate
}

// NewPKI makes a CA and its two certificates (ECDSA P-256, valid an hour).
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), Pool: x509.NewCertPool()}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cri-mini test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	p.Pool.AddCert(ca)
	p.CAFile = p.write(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, []byte, tls.Certificate) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM, keyPEM, pair
	}
	_, _, p.Server = leaf(2, "registry", x509.ExtKeyUsageServerAuth)
	certPEM, keyPEM, client := leaf(3, "node", x509.ExtKeyUsageClientAuth)
	p.Client = client
	p.ClientCert = p.write(t, "client.pem", certPEM)
	p.ClientKey = p.write(t, "client-key.pem", keyPEM)
	return p
}

func (p *PKI) write(t testing.TB, name string, data []byte) string {
	t.Helper()
	f := filepath.Join(p.Dir, name)
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// Options shape a Registry.
type Options struct {
	// TLS serves HTTPS with a certificate of this CA; nil serves plain HTTP.
	TLS *PKI
	// ClientCerts demands a client certificate of the TLS CA (mTLS).
	ClientCerts bool
	// Wrap, if set, stands between the log and the registry (to refuse,
	// corrupt or stall answers).
	Wrap func(http.Handler) http.Handler
}

// Registry is a registry serving on 127.0.0.1 until the test ends.
type Registry struct {
	// Host is host:port.
	Host string
	// Transport reaches the registry (trusting the test CA, with the client
	// certificate); Push uses it.
	Transport http.RoundTripper
	srv       *httptest.Server

	mu       sync.Mutex
	requests []*http.Request
	apiRoot  string
}

// New starts a registry.
func New(t testing.TB, o Options) *Registry {
	t.Helper()
	r := &Registry{apiRoot: "/v2", Transport: remote.DefaultTransport}
	var inner http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	if o.Wrap != nil {
		inner = o.Wrap(inner)
	}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req.Clone(context.Background()))
		root := r.apiRoot
		r.mu.Unlock()
		if root != "/v2" {
			rest, ok := strings.CutPrefix(req.URL.Path, root)
			if !ok {
				http.NotFound(w, req)
				return
			}
			req.URL.Path = "/v2" + rest
		}
		inner.ServeHTTP(w, req)
	}))
	// No log of the handshakes a test provokes on purpose.
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if o.TLS == nil {
		r.srv.Start()
	} else {
		r.srv.TLS = &tls.Config{Certificates: []tls.Certificate{o.TLS.Server}}
		if o.ClientCerts {
			r.srv.TLS.ClientAuth, r.srv.TLS.ClientCAs = tls.RequireAndVerifyClientCert, o.TLS.Pool
		}
		r.srv.StartTLS()
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: o.TLS.Pool, Certificates: []tls.Certificate{o.TLS.Client}}
		r.Transport = tr
	}
	t.Cleanup(r.srv.Close)
	r.Host = r.srv.Listener.Addr().String()
	return r
}

// SetAPIRoot moves the API from /v2 to root (a registry behind a path
// prefix); set it after pushing.
func (r *Registry) SetAPIRoot(root string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.apiRoot = root
}

// Log returns the requests the registry got so far, in order.
func (r *Registry) Log() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// Push writes img as repository:tag (or @digest) ref of the registry.
func (r *Registry) Push(t testing.TB, ref string, img v1.Image, opts ...remote.Option) name.Reference {
	t.Helper()
	n, err := name.ParseReference(r.Host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(n, img, append([]remote.Option{remote.WithTransport(r.Transport)}, opts...)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return n
}

// DeadAddr is a loopback address nothing listens on (connections to it
// are refused).
func DeadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Key is a signing key made for a test, as `cosign generate-key-pair`
// makes one (ECDSA P-256), its public half in a PEM file.
type Key struct {
	Signer  signature.Signer
	PubFile string
}

// NewKey makes a key.
func NewKey(t testing.TB) Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(f, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return Key{Signer: signer, PubFile: f}
}

// Sign pushes, as cosign does, a signature of the manifest digest of repo
// in the registry (Sign, with the registry's transport).
func (r *Registry) Sign(t testing.TB, repo string, digest v1.Hash, key Key, claimed string, referrer bool) {
	t.Helper()
	d, err := name.NewDigest(r.Host+"/"+repo+"@"+digest.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	Sign(t, d, key, claimed, referrer, remote.WithTransport(r.Transport))
}

// Sign pushes, as cosign does, a signature of image: a simple-signing
// payload (claiming the identity claimed, or cosign's default, the
// repository) signed by key, under the tag "sha256-<hex>.sig" of the
// image's repository, or, with referrer, as an OCI referrer of the image.
func Sign(t testing.TB, image name.Digest, key Key, claimed string, referrer bool, opts ...remote.Option) {
	t.Helper()
	pl, err := payload.Cosign{Image: image, ClaimedIdentity: claimed}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := key.Signer.SignMessage(bytes.NewReader(pl))
	if err != nil {
		t.Fatal(err)
	}
	sigImg, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer:       static.NewLayer(pl, "application/vnd.dev.cosign.simplesigning.v1+json"),
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var to name.Reference = image.Context().Tag(strings.Replace(image.DigestStr(), ":", "-", 1) + ".sig")
	if referrer {
		signed, err := remote.Get(image, opts...)
		if err != nil {
			t.Fatal(err)
		}
		sigImg = mutate.Subject(mutate.ConfigMediaType(sigImg, "application/vnd.dev.cosign.artifact.sig.v1+json"), signed.Descriptor).(v1.Image)
		sd, err := sigImg.Digest()
		if err != nil {
			t.Fatal(err)
		}
		to = image.Context().Digest(sd.String())
	}
	if err := remote.Write(to, sigImg, opts...); err != nil {
		t.Fatalf("push the signature of %s: %v", image, err)
	}
}
