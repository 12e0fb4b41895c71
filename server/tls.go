package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of one TLS endpoint.
type TLSFiles struct {
	CertFile string // this node's certificate (chain)
	KeyFile  string // its private key
	CAFile   string // the CA whose certificates the other side must show
}

// IsZero reports whether no file is named (TLS off).
func (f TLSFiles) IsZero() bool { return f == TLSFiles{} }

// ClientTLS is the TLS configuration of the client port: the node shows
// CertFile; with CAFile set, every client must show a certificate signed by
// that CA (without one it is refused during the handshake). nil when no
// file is named: plaintext.
func ClientTLS(f TLSFiles) (*tls.Config, error) {
	if f.IsZero() {
		return nil, nil
	}
	pair, err := loadPair(f, "--client-cert-file", "--client-key-file")
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if f.CAFile != "" {
		pool, err := loadPool(f.CAFile, "--client-ca-file")
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// PeerTLS is mutual TLS between members: the configuration of the peer
// port (server) and the one for dialling other members (client), both nil
// when no file is named. All three files are required: each member shows
// its certificate and checks the other's against the CA.
//
// Which certificates are trusted: each names its member as the URI
// keyval://<cluster-id>/member/<id> (transport.MemberURI), and the server
// turns on the transport's PeerIdentity with these configurations. When
// dialling, the member's certificate must be signed by the CA and name the
// host being dialled and the member id; when accepting, the sender is the
// member its verified certificate names. See docs/operations.md.
func PeerTLS(f TLSFiles) (server, client *tls.Config, err error) {
	if f.IsZero() {
		return nil, nil, nil
	}
	if f.CAFile == "" {
		return nil, nil, errors.New("--peer-ca-file is required with --peer-cert-file: members check each other's certificates against it")
	}
	pair, err := loadPair(f, "--peer-cert-file", "--peer-key-file")
	if err != nil {
		return nil, nil, err
	}
	pool, err := loadPool(f.CAFile, "--peer-ca-file")
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
	}
	client = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, RootCAs: pool}
	return server, client, nil
}

func loadPair(f TLSFiles, certFlag, keyFlag string) (tls.Certificate, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return tls.Certificate{}, fmt.Errorf("%s and %s go together: give both", certFlag, keyFlag)
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s %s, %s %s: %w", certFlag, f.CertFile, keyFlag, f.KeyFile, err)
	}
	return pair, nil
}

func loadPool(file, flag string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", flag, file)
	}
	return pool, nil
}
