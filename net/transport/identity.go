package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Reasons the transport refuses a peer, as passed to Config.Refused.
const (
	// RefusedHandshake: the TLS handshake failed (no certificate, one from
	// another CA, or no TLS at all).
	RefusedHandshake = "handshake"
	// RefusedCertificate: the certificate names no member of this cluster.
	RefusedCertificate = "certificate"
	// RefusedImpersonation: the sender claims another member id than its
	// certificate names.
	RefusedImpersonation = "impersonation"
)

// memberURIScheme is the scheme of the URI SAN that binds a peer
// certificate to one member of one cluster: keyval://<cluster>/member/<id>,
// the cluster id in 16 hex digits as Status and identity.json print it.
const memberURIScheme = "keyval"

// MemberURI is the URI a peer certificate of member id of cluster names as
// a subject alternative name.
func MemberURI(cluster uint64, id core.NodeID) *url.URL {
	return &url.URL{Scheme: memberURIScheme, Host: fmt.Sprintf("%016x", cluster), Path: "/member/" + strconv.FormatUint(uint64(id), 10)}
}

// CertMember returns the member of cluster that cert names in a URI SAN
// (MemberURI). A certificate naming none, or more than one, is an error.
func CertMember(cert *x509.Certificate, cluster uint64) (core.NodeID, error) {
	host := fmt.Sprintf("%016x", cluster)
	var found []core.NodeID
	var others []string
	for _, u := range cert.URIs {
		if u.Scheme != memberURIScheme {
			continue
		}
		rest, ok := strings.CutPrefix(u.Path, "/member/")
		id, err := strconv.ParseUint(rest, 10, 64)
		if !ok || err != nil || id == 0 || u.Host != host {
			others = append(others, u.String())
			continue
		}
		found = append(found, core.NodeID(id))
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return 0, fmt.Errorf("certificate %q names several members of cluster %s (%v); a member certificate names one", cert.Subject.CommonName, host, found)
	case len(others) > 0:
		return 0, fmt.Errorf("certificate %q names no member of cluster %s, only %s", cert.Subject.CommonName, host, strings.Join(others, ", "))
	}
	return 0, fmt.Errorf("certificate %q has no %s URI naming its member id (want %s)", cert.Subject.CommonName, memberURIScheme, MemberURI(cluster, 0).String()+"<id>")
}

// streamCertMember is the member id the verified client certificate of a
// stream names.
func (t *Transport) streamCertMember(ctx context.Context) (core.NodeID, error) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return 0, errors.New("no peer information on the stream")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return 0, errors.New("the caller showed no verified certificate")
	}
	return CertMember(info.State.VerifiedChains[0][0], t.cfg.ClusterID)
}

// checkIdentity refuses a stream whose claimed sender is not the member its
// certificate names. A no-op unless Config.PeerIdentity is set.
func (t *Transport) checkIdentity(ctx context.Context, from core.NodeID) error {
	if !t.cfg.PeerIdentity {
		return nil
	}
	id, err := t.streamCertMember(ctx)
	if err != nil {
		t.refuse(RefusedCertificate, from, err)
		return status.Errorf(codes.PermissionDenied, "node %d refuses a stream claiming to be from node %d: %v", t.cfg.ID, from, err)
	}
	if id != from {
		err := fmt.Errorf("the certificate names node %d, but the stream claims node %d", id, from)
		t.refuse(RefusedImpersonation, from, err)
		return status.Errorf(codes.PermissionDenied, "node %d refuses the stream: %v", t.cfg.ID, err)
	}
	return nil
}

// refuse counts a refusal with the Refused callback and logs it, at most
// once every 10 s per reason and sender.
func (t *Transport) refuse(reason string, from core.NodeID, err error) {
	if t.cfg.Refused != nil {
		t.cfg.Refused(reason, from)
	}
	if ok, skipped := t.limit.allow("refused-"+reason, from); ok {
		t.log.Warn("refused a peer", "reason", reason, "claimed_from", uint64(from), "err", err, "similar_not_logged", skipped)
	}
}

// dialTLS is ClientTLS for dialling member id: with PeerIdentity, the
// server's certificate must also name id, so an address that points at
// another member (or at a stranger holding a certificate of the CA) is
// never taken for id.
func (t *Transport) dialTLS(id core.NodeID) *tls.Config {
	c := t.cfg.ClientTLS.Clone()
	if !t.cfg.PeerIdentity {
		return c
	}
	verify := c.VerifyConnection // the configuration's own checks come first
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the member showed no certificate")
		}
		got, err := CertMember(cs.PeerCertificates[0], t.cfg.ClusterID)
		if err != nil {
			return fmt.Errorf("dialling node %d: %w", id, err)
		}
		if got != id {
			return fmt.Errorf("dialled node %d, but the certificate at that address names node %d", id, got)
		}
		return nil
	}
	return c
}

// countingCreds counts failed TLS handshakes on the peer port as refusals.
type countingCreds struct {
	credentials.TransportCredentials
	t *Transport
}

func (c countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.t.refuse(RefusedHandshake, core.None, fmt.Errorf("from %s: %w", conn.RemoteAddr(), err))
	}
	return out, info, err
}

func (c countingCreds) Clone() credentials.TransportCredentials {
	return countingCreds{c.TransportCredentials.Clone(), c.t}
}

// DialCreds are gRPC's TLS credentials for dialling with cfg, except that
// when cfg verifies the server itself (VerifyConnection) and the address
// dialled is an IP address, that address reaches the check as
// ConnectionState.ServerName: crypto/tls leaves it empty then (no SNI for
// addresses), and server.PeerTLS verifies against the CA file as it is at
// each handshake, which needs the name.
func DialCreds(cfg *tls.Config) credentials.TransportCredentials {
	return dialCreds{credentials.NewTLS(cfg), cfg}
}

type dialCreds struct {
	credentials.TransportCredentials
	cfg *tls.Config
}

func (d dialCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if d.cfg.VerifyConnection == nil {
		return d.TransportCredentials.ClientHandshake(ctx, authority, conn)
	}
	host := d.cfg.ServerName
	if host == "" {
		var err error
		if host, _, err = net.SplitHostPort(authority); err != nil {
			host = authority
		}
	}
	cfg := d.cfg.Clone()
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.ServerName == "" {
			cs.ServerName = host
		}
		return verify(cs)
	}
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, conn)
}

func (d dialCreds) Clone() credentials.TransportCredentials {
	return dialCreds{d.TransportCredentials.Clone(), d.cfg}
}
