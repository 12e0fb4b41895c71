package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/therealutkarshpriyadarshi/keyval/internal/pki"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// certsFlags are kvctl certs' own flags.
type certsFlags struct {
	dir, cluster, token, clusterID string
	validFor                       time.Duration
}

func (a *app) certsCommand() *cobra.Command {
	f := &certsFlags{}
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a CA and certificates for a test cluster (members, clients) in a directory",
		Long: `certs makes what TLS needs for a test cluster, in --dir: a CA (ca.pem,
ca-key.pem), for each member of --initial-cluster a certificate
(member-ID.pem, member-ID-key.pem) for its peer port and its client port
that names the host of its peer address and, as the URI
keyval://<cluster-id>/member/<id>, the member it is, and a client
certificate (client.pem, client-key.pem, made once) for kvctl and
applications, which names no member and so cannot act as one.

The cluster id comes from --initial-cluster and --cluster-token, as keyvald
computes it. For a member added later to a running cluster, give the id
kvctl status prints as --cluster-id and only the new member in
--initial-cluster; an existing CA in --dir is used again. Keep ca-key.pem
away from the members. See docs/operations.md (TLS).`,
		Args: exactArgs(0),
		// No cluster to reach: skip the global flags' checks.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(*cobra.Command, []string) error {
			if err := f.run(a); err != nil {
				return &exitError{code: exitFailed, msg: "certs: " + err.Error()}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "certs", "directory to write the files into (created if missing)")
	fl.StringVar(&f.cluster, "initial-cluster", "", "the members, as keyvald's --initial-cluster: id=host:port,...")
	fl.StringVar(&f.token, "cluster-token", server.DefaultClusterToken, "as keyvald's --cluster-token")
	fl.StringVar(&f.clusterID, "cluster-id", "", "the cluster id in hex (kvctl status), for members added to a running cluster")
	fl.DurationVar(&f.validFor, "valid-for", 365*24*time.Hour, "how long the certificates are valid")
	return cmd
}

func (f *certsFlags) run(a *app) error {
	if f.cluster == "" {
		return errors.New("--initial-cluster is required")
	}
	members, err := server.ParseCluster(f.cluster)
	if err != nil {
		return fmt.Errorf("--initial-cluster: %w", err)
	}
	cid := (&server.Config{InitialCluster: members, ClusterToken: f.token}).ClusterID()
	if f.clusterID != "" {
		if cid, err = strconv.ParseUint(f.clusterID, 16, 64); err != nil {
			return fmt.Errorf("--cluster-id %q: want the hex id kvctl status prints", f.clusterID)
		}
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", f.dir, err)
	}
	ca, err := f.ca(a)
	if err != nil {
		return err
	}
	for _, id := range slices.Sorted(maps.Keys(members)) {
		host, _, err := net.SplitHostPort(members[id])
		if err != nil {
			return fmt.Errorf("member %d: peer address %q: %w", id, members[id], err)
		}
		pair, err := ca.Issue(fmt.Sprintf("member-%d", id), f.validFor, []string{host}, []*url.URL{transport.MemberURI(cid, id)})
		if err != nil {
			return err
		}
		if err := f.write(a, fmt.Sprintf("member-%d", id), pair); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(f.dir, "client.pem")); errors.Is(err, os.ErrNotExist) {
		pair, err := ca.Issue("client", f.validFor, nil, nil)
		if err != nil {
			return err
		}
		if err := f.write(a, "client", pair); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "cluster id %016x\n", cid)
	return nil
}

// ca loads the CA in the directory, or makes one.
func (f *certsFlags) ca(a *app) (*pki.CA, error) {
	certFile, keyFile := filepath.Join(f.dir, "ca.pem"), filepath.Join(f.dir, "ca-key.pem")
	certPEM, certErr := os.ReadFile(certFile)
	keyPEM, keyErr := os.ReadFile(keyFile)
	if certErr == nil && keyErr == nil {
		ca, err := pki.LoadCA(pki.Pair{CertPEM: certPEM, KeyPEM: keyPEM})
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
		}
		fmt.Fprintf(a.stdout, "using the CA in %s\n", certFile)
		return ca, nil
	}
	if !errors.Is(certErr, os.ErrNotExist) || !errors.Is(keyErr, os.ErrNotExist) {
		return nil, fmt.Errorf("%s and %s: want both or neither: %w", certFile, keyFile, errors.Join(certErr, keyErr))
	}
	ca, pair, err := pki.NewCA("keyval test CA", f.validFor)
	if err != nil {
		return nil, err
	}
	return ca, f.write(a, "ca", pair)
}

// write stores name.pem and name-key.pem, refusing to overwrite either.
func (f *certsFlags) write(a *app, name string, pair pki.Pair) error {
	for _, file := range []struct {
		path string
		data []byte
	}{{filepath.Join(f.dir, name+".pem"), pair.CertPEM}, {filepath.Join(f.dir, name+"-key.pem"), pair.KeyPEM}} {
		out, err := os.OpenFile(file.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("write %s: %w", file.path, err)
		}
		_, err = out.Write(file.data)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", file.path, err)
		}
		fmt.Fprintf(a.stdout, "wrote %s\n", file.path)
	}
	return nil
}
