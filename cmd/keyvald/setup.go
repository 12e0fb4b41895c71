package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// setupFlags prepare a node before it starts: its TLS certificates (for
// clients, for peers, and for reaching --join members), and restoring it
// from a backup.
type setupFlags struct {
	client, peer, join server.TLSFiles
	restore            string
	peerInsecure       bool
	tls                tlsPolicyFlags
}

// tlsPolicyFlags are the TLS version and the certificate names allowed,
// as given (comma-separated lists).
type tlsPolicyFlags struct {
	minVersion             string
	metrics                server.TLSFiles
	clientCNs, clientHosts string
	peerCNs, peerHosts     string
}

func addSetupFlags(fs *flag.FlagSet) *setupFlags {
	f := &setupFlags{}
	fs.StringVar(&f.client.CertFile, "client-cert-file", "", "PEM certificate the client port shows; enables TLS for clients (with --client-key-file)")
	fs.StringVar(&f.client.KeyFile, "client-key-file", "", "PEM private key of --client-cert-file")
	fs.StringVar(&f.client.CAFile, "client-ca-file", "", "PEM CA certificate(s); when set, every client must show a certificate signed by it")
	fs.StringVar(&f.peer.CertFile, "peer-cert-file", "", "PEM certificate this member shows other members; enables mutual TLS between members (with --peer-key-file and --peer-ca-file); it must name the host of this member's peer address and, as keyval://<cluster-id>/member/<id>, this member (kvctl certs makes such certificates)")
	fs.StringVar(&f.peer.KeyFile, "peer-key-file", "", "PEM private key of --peer-cert-file")
	fs.StringVar(&f.peer.CAFile, "peer-ca-file", "", "PEM CA certificate(s) that signed the members' peer certificates")
	fs.BoolVar(&f.peerInsecure, "peer-insecure", false, "allow a plaintext peer port on an address other than loopback: anyone who reaches it can act as a member")
	fs.StringVar(&f.join.CAFile, "join-ca-file", "", "with --join over TLS: PEM CA certificate(s) of the members' client ports (as kvctl --cacert)")
	fs.StringVar(&f.join.CertFile, "join-cert-file", "", "with --join, if the members require client certificates: PEM certificate to show (as kvctl --cert)")
	fs.StringVar(&f.join.KeyFile, "join-key-file", "", "PEM private key of --join-cert-file")
	fs.StringVar(&f.tls.minVersion, "tls-min-version", "1.3", "oldest TLS version accepted and offered on every TLS port and connection: 1.3 or 1.2")
	fs.StringVar(&f.tls.clientCNs, "client-cert-allowed-cn", "", "comma-separated common names; with --client-ca-file, only client certificates with one of them (or matching --client-cert-allowed-hostname) are accepted")
	fs.StringVar(&f.tls.clientHosts, "client-cert-allowed-hostname", "", "comma-separated hostnames or IP addresses; with --client-ca-file, only client certificates valid for one of them (or matching --client-cert-allowed-cn) are accepted")
	fs.StringVar(&f.tls.peerCNs, "peer-cert-allowed-cn", "", "comma-separated common names; only peer certificates with one of them (or matching --peer-cert-allowed-hostname) are accepted, both when accepting and when dialling")
	fs.StringVar(&f.tls.peerHosts, "peer-cert-allowed-hostname", "", "comma-separated hostnames or IP addresses; only peer certificates valid for one of them (or matching --peer-cert-allowed-cn) are accepted, both when accepting and when dialling")
	fs.StringVar(&f.tls.metrics.CertFile, "metrics-cert-file", "", "PEM certificate for --listen-metrics; serves HTTPS instead of HTTP (with --metrics-key-file)")
	fs.StringVar(&f.tls.metrics.KeyFile, "metrics-key-file", "", "PEM private key of --metrics-cert-file")
	fs.StringVar(&f.restore, "restore", "", "start this member of a NEW cluster from a backup file (kvctl snapshot save): needs an empty --data-dir; start every member with the same file, and drop the flag on later restarts")
	return f
}

// newServer loads the TLS files into cfg, restores the data directory if
// asked, and creates the node.
func (f *setupFlags) newServer(cfg server.Config) (*server.Server, error) {
	if err := f.tls.apply(f); err != nil {
		return nil, err
	}
	var err error
	if cfg.ClientTLS, err = server.ClientTLS(f.client); err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	if cfg.PeerServerTLS, cfg.PeerClientTLS, err = server.PeerTLS(f.peer); err != nil {
		return nil, fmt.Errorf("peer TLS: %w", err)
	}
	if cfg.PeerServerTLS == nil {
		if !loopback(cfg.PeerAddr) && !f.peerInsecure {
			return nil, fmt.Errorf("--listen-peer %s is not a loopback address and peer TLS is off: anyone who reaches it could act as a member; "+
				"give --peer-cert-file, --peer-key-file and --peer-ca-file (kvctl certs makes them), or --peer-insecure to accept the risk", cfg.PeerAddr)
		}
		cfg.Logger.Warn("the peer port is plaintext: whoever reaches it can send Raft messages as any member id; use peer TLS outside a single machine",
			"listen_peer", cfg.PeerAddr)
	}
	if !f.join.IsZero() {
		if cfg.JoinTLS, err = client.TLSConfig(f.join.CAFile, f.join.CertFile, f.join.KeyFile); err != nil {
			return nil, fmt.Errorf("--join-ca-file, --join-cert-file, --join-key-file: %w", err)
		}
		cfg.JoinTLS.MinVersion = f.client.MinVersion
	}
	if !f.tls.metrics.IsZero() && cfg.MetricsAddr == "" {
		return nil, errors.New("--metrics-cert-file and --metrics-key-file need --listen-metrics")
	}
	if cfg.MetricsTLS, err = server.MetricsTLS(f.tls.metrics); err != nil {
		return nil, fmt.Errorf("metrics TLS: %w", err)
	}
	if f.restore != "" {
		if err := server.Restore(cfg, f.restore); err != nil {
			return nil, err
		}
	}
	srv, err := server.New(cfg)
	if err != nil {
		return nil, explainStartFailure(cfg, err)
	}
	return srv, nil
}

// apply puts the TLS version and the allowed names into the endpoints'
// files.
func (p *tlsPolicyFlags) apply(f *setupFlags) error {
	v := uint16(tls.VersionTLS13) // also when unset (setupFlags made without flags)
	if p.minVersion != "" {
		var err error
		if v, err = server.ParseTLSVersion(p.minVersion); err != nil {
			return fmt.Errorf("--tls-min-version: %w", err)
		}
	}
	f.client.MinVersion, f.peer.MinVersion, p.metrics.MinVersion = v, v, v
	f.client.AllowedCNs, f.client.AllowedHostnames = splitList(p.clientCNs), splitList(p.clientHosts)
	f.peer.AllowedCNs, f.peer.AllowedHostnames = splitList(p.peerCNs), splitList(p.peerHosts)
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// walBehindState is how core refuses a state database ahead of the log;
// it has no error value of its own to test for.
const walBehindState = "is beyond the last log index"

// explainStartFailure adds, to the failures of server.New whose text names
// only a symptom, what happened and what an operator can safely do.
func explainStartFailure(cfg server.Config, err error) error {
	if ce := (*disk.CorruptionError)(nil); errors.As(err, &ce) && ce.WAL != nil {
		return fmt.Errorf("%w\n"+
			"what happened: a record of the write-ahead log %s was damaged after it was written (not a torn write from a crash); "+
			"the error above says which entries it may have held and whether the vote and term survive\n"+
			"why keyvald stops: this member may have acknowledged those entries or voted in a term it no longer remembers; "+
			"running without them could lose committed writes or let two leaders be elected in one term\n"+
			"what to do: %s",
			err, filepath.Join(cfg.DataDir, "wal"), replaceMember(cfg.ID))
	}
	if !strings.Contains(err.Error(), walBehindState) {
		return err
	}
	return fmt.Errorf("%w\n"+
		"what happened: the state database %s has applied entries that the write-ahead log %s no longer holds: "+
		"the WAL lost its tail (a segment cut short or replaced by an older copy, or a disk that acknowledged writes it did not keep)\n"+
		"why keyvald stops: that tail may hold entries and votes this member already acknowledged; "+
		"running without them could lose committed writes or let two leaders be elected in one term\n"+
		"what to do: %s",
		err, filepath.Join(cfg.DataDir, "state.db"), filepath.Join(cfg.DataDir, "wal"), replaceMember(cfg.ID))
}

// replaceMember is the safe way out for a member whose log cannot be
// trusted.
func replaceMember(id core.NodeID) string {
	return fmt.Sprintf("do not start this directory again, whole or with some of its files deleted; keep it for inspection "+
		"and replace the member (docs/membership.md, \"Replace a member\"): kvctl member add-learner --id NEW ..., "+
		"keyvald --id NEW --join ..., kvctl member promote --id NEW, then kvctl member remove --id %d. "+
		"If the other members cannot form a majority without this one, start a new cluster from a backup (keyvald --restore FILE)", id)
}
