package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// TLSFiles names the PEM files of one TLS endpoint and how strict it is.
type TLSFiles struct {
	CertFile string // this node's certificate (chain)
	KeyFile  string // its private key
	CAFile   string // the CA whose certificates the other side must show

	// MinVersion is the oldest TLS version accepted and offered
	// (tls.VersionTLS12 or tls.VersionTLS13); zero is TLS 1.3.
	MinVersion uint16
	// AllowedCNs and AllowedHostnames, when either is set, narrow the
	// certificates the CA signed to those whose common name is one of
	// AllowedCNs or that are valid for one of AllowedHostnames (as a
	// server's certificate is for its name): a CA that signs for several
	// purposes then does not let all of them in.
	AllowedCNs       []string
	AllowedHostnames []string
}

// IsZero reports whether no file is named (TLS off).
func (f TLSFiles) IsZero() bool { return f.CertFile == "" && f.KeyFile == "" && f.CAFile == "" }

// ParseTLSVersion reads a --tls-min-version value: 1.2 or 1.3.
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.2":
		return tls.VersionTLS12, nil
	}
	return 0, fmt.Errorf("TLS version %q: want 1.2 or 1.3", s)
}

// tlsFlags name the flags of one endpoint's files in errors.
type tlsFlags struct{ cert, key, ca, names string }

var (
	clientFlags  = tlsFlags{"--client-cert-file", "--client-key-file", "--client-ca-file", "--client-cert-allowed-cn and --client-cert-allowed-hostname"}
	peerFlags    = tlsFlags{"--peer-cert-file", "--peer-key-file", "--peer-ca-file", "--peer-cert-allowed-cn and --peer-cert-allowed-hostname"}
	metricsFlags = tlsFlags{"--metrics-cert-file", "--metrics-key-file", "--metrics-ca-file", "allowed names"}
)

// ClientTLS is the TLS configuration of the client port: the node shows
// CertFile; with CAFile set, every client must show a certificate signed by
// that CA (without one it is refused during the handshake). nil when no
// file is named: plaintext. The files are read again when they change
// (tlsSource).
func ClientTLS(f TLSFiles) (*tls.Config, error) {
	return serverTLS(f, clientFlags)
}

// MetricsTLS is ClientTLS for the metrics address.
func MetricsTLS(f TLSFiles) (*tls.Config, error) {
	return serverTLS(f, metricsFlags)
}

func serverTLS(f TLSFiles, flags tlsFlags) (*tls.Config, error) {
	if f.IsZero() {
		return nil, nil
	}
	if f.CAFile == "" && (len(f.AllowedCNs) > 0 || len(f.AllowedHostnames) > 0) {
		return nil, fmt.Errorf("%s need %s: only certificates the CA verified have names to check", flags.names, flags.ca)
	}
	src, err := newTLSSource(f, flags)
	if err != nil {
		return nil, err
	}
	auth := tls.NoClientCert
	if f.CAFile != "" {
		auth = tls.RequireAndVerifyClientCert
	}
	return src.serverConfig(auth), nil
}

// PeerTLS is mutual TLS between members: the configuration of the peer
// port (server) and the one for dialling other members (client), both nil
// when no file is named. All three files are required: each member shows
// its certificate and checks the other's against the CA. Dial with the
// client configuration through transport.DialCreds, which lets it check
// the certificate against an IP address dialled.
//
// Which certificates are trusted: each names its member as the URI
// keyval://<cluster-id>/member/<id> (transport.MemberURI), and the server
// turns on the transport's PeerIdentity with these configurations. When
// dialling, the member's certificate must be signed by the CA and name the
// host being dialled and the member id; when accepting, the sender is the
// member its verified certificate names. Allowed names, if set, apply both
// ways. See docs/operations.md.
func PeerTLS(f TLSFiles) (server, client *tls.Config, err error) {
	if f.IsZero() {
		return nil, nil, nil
	}
	if f.CAFile == "" {
		return nil, nil, errors.New("--peer-ca-file is required with --peer-cert-file: members check each other's certificates against it")
	}
	src, err := newTLSSource(f, peerFlags)
	if err != nil {
		return nil, nil, err
	}
	return src.serverConfig(tls.RequireAndVerifyClientCert), src.clientConfig(), nil
}

// tlsSource is one endpoint's certificate and CA pool, read again from
// their files when these change, so certificates can be renewed and CAs
// rotated without a restart. Every handshake reads the files (a few KB
// from the page cache, next to a handshake's public-key operations) and
// parses them only if their bytes changed: comparing bytes, unlike
// modification times of a coarse clock, cannot miss a quick second write.
// Files that do not load (a certificate replaced before its key) leave the
// last good ones in use; the next handshake tries again.
type tlsSource struct {
	f     TLSFiles
	flags tlsFlags

	mu   sync.Mutex
	raw  [3][]byte // cert, key, CA as last loaded
	cert *tls.Certificate
	pool *x509.CertPool
}

func newTLSSource(f TLSFiles, flags tlsFlags) (*tlsSource, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, fmt.Errorf("%s and %s go together: give both", flags.cert, flags.key)
	}
	if f.MinVersion == 0 {
		f.MinVersion = tls.VersionTLS13
	}
	s := &tlsSource{f: f, flags: flags}
	raw, err := s.read()
	if err != nil {
		return nil, err
	}
	if err := s.load(raw); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *tlsSource) read() ([3][]byte, error) {
	var raw [3][]byte
	for i, file := range []struct{ name, flag string }{{s.f.CertFile, s.flags.cert}, {s.f.KeyFile, s.flags.key}, {s.f.CAFile, s.flags.ca}} {
		if file.name == "" {
			continue
		}
		b, err := os.ReadFile(file.name)
		if err != nil {
			return raw, fmt.Errorf("%s: %w", file.flag, err)
		}
		raw[i] = b
	}
	return raw, nil
}

// load takes in the files whose bytes changed. The key pair and the CA
// are apart: a certificate half replaced does not hold back a new CA.
func (s *tlsSource) load(raw [3][]byte) error {
	var errs []error
	if !bytes.Equal(raw[0], s.raw[0]) || !bytes.Equal(raw[1], s.raw[1]) {
		pair, err := tls.X509KeyPair(raw[0], raw[1])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s, %s %s: %w", s.flags.cert, s.f.CertFile, s.flags.key, s.f.KeyFile, err))
		} else {
			s.raw[0], s.raw[1], s.cert = raw[0], raw[1], &pair
		}
	}
	if s.f.CAFile != "" && !bytes.Equal(raw[2], s.raw[2]) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw[2]) {
			errs = append(errs, fmt.Errorf("%s %s holds no PEM certificate", s.flags.ca, s.f.CAFile))
		} else {
			s.raw[2], s.pool = raw[2], pool
		}
	}
	return errors.Join(errs...)
}

// current is the certificate and CA pool to use now.
func (s *tlsSource) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if raw, err := s.read(); err == nil {
		_ = s.load(raw) // what fails to load stays as last loaded
	}
	return s.cert, s.pool
}

// serverConfig hands each handshake a configuration made from the current
// files (crypto/tls fixes ClientCAs for the life of a Config).
func (s *tlsSource) serverConfig(auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: s.f.MinVersion, ClientAuth: auth,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			return &tls.Config{
				MinVersion: s.f.MinVersion, Certificates: []tls.Certificate{*cert}, ClientCAs: pool, ClientAuth: auth,
				// A resumed session would skip checking the client's
				// certificate against a CA file changed since.
				SessionTicketsDisabled: true,
				VerifyConnection:       s.checkClientNames,
			}, nil
		},
	}
}

func (s *tlsSource) checkClientNames(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil // no client certificate asked for
	}
	return s.allowed(cs.VerifiedChains[0][0])
}

// clientConfig verifies the server's certificate itself, against the CA
// file as it is at each handshake: crypto/tls would verify against a
// RootCAs fixed when the Config was made.
func (s *tlsSource) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: s.f.MinVersion,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := s.current()
			return cert, nil
		},
		InsecureSkipVerify: true, // verified by VerifyConnection, never skipped
		VerifyConnection:   s.verifyServer,
	}
}

func (s *tlsSource) verifyServer(cs tls.ConnectionState) error {
	if cs.ServerName == "" {
		return errors.New("no server name to check the member's certificate against (dial through transport.DialCreds)")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the member showed no certificate")
	}
	_, pool := s.current()
	opts := x509.VerifyOptions{Roots: pool, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("the certificate of %s: %w", cs.ServerName, err)
	}
	return s.allowed(leaf)
}

// allowed checks a verified certificate against the allowed names.
func (s *tlsSource) allowed(cert *x509.Certificate) error {
	cns, hosts := s.f.AllowedCNs, s.f.AllowedHostnames
	if len(cns) == 0 && len(hosts) == 0 || slices.Contains(cns, cert.Subject.CommonName) {
		return nil
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) == nil {
			return nil
		}
	}
	return fmt.Errorf("certificate %q is signed by the CA but matches none of the allowed names (common names [%s], hostnames [%s])",
		cert.Subject.CommonName, strings.Join(cns, " "), strings.Join(hosts, " "))
}
