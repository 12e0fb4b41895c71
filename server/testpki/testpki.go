// Package testpki makes throwaway certificate authorities and certificates
// for tests (internal/pki: crypto/x509 only, no openssl), written as PEM
// files.
package testpki

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/internal/pki"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
)

// validFor is how long test certificates live.
const validFor = 24 * time.Hour

// CA is a certificate authority whose files live in a test's directory.
type CA struct {
	// File is the CA certificate's PEM file.
	File string

	dir string
	ca  *pki.CA
}

// NewCA makes a CA named name with its certificate in a fresh temporary
// directory.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, pair, err := pki.NewCA(name, validFor)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	c := &CA{dir: t.TempDir(), ca: ca}
	c.File = c.write(t, name+"-ca.pem", pair.CertPEM)
	return c
}

// Issue makes a certificate for name, valid for both TLS servers and
// clients, naming hosts (IP addresses or DNS names) as its subject
// alternative names. It returns the certificate's and the key's files.
func (ca *CA) Issue(t testing.TB, name string, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	return ca.issue(t, name, hosts, nil)
}

// IssueMember is Issue for a member's peer certificate: it also names
// member id of cluster (transport.MemberURI).
func (ca *CA) IssueMember(t testing.TB, name string, cluster uint64, id core.NodeID, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	return ca.issue(t, name, hosts, []*url.URL{transport.MemberURI(cluster, id)})
}

func (ca *CA) issue(t testing.TB, name string, hosts []string, uris []*url.URL) (certFile, keyFile string) {
	t.Helper()
	pair, err := ca.ca.Issue(name, validFor, hosts, uris)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return ca.write(t, name+".pem", pair.CertPEM), ca.write(t, name+"-key.pem", pair.KeyPEM)
}

func (ca *CA) write(t testing.TB, name string, pem []byte) string {
	t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem, 0o600); err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return path
}
