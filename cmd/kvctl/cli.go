package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/internal/version"
)

// DefaultEndpoints are the client addresses of the three members that
// `make cluster-start` runs, so that `./bin/kvctl put k v` works as is.
const DefaultEndpoints = "127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379"

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1 // key missing, CAS failed, server refused
	exitUsage       = 2
	exitUnavailable = 3 // no member answered, no leader, or timed out
)

// envPrefix prefixes the environment variable that sets each global flag's
// default: --endpoints is KVCTL_ENDPOINTS, --cacert is KVCTL_CACERT.
const envPrefix = "KVCTL_"

// exitError carries an exit code and the message for stderr out of a
// command. Commands return only exitErrors; any other error comes from
// cobra's own parsing and is a usage error.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// app is one kvctl invocation.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)

	endpoints string
	timeout   time.Duration
	output    string
	cacert    string
	cert      string
	key       string
	user      string
	password  string

	// cleanEndpoints is --endpoints as the client parsed it.
	cleanEndpoints []string
}

// run executes kvctl with args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, lookupEnv: lookupEnv}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, ee.msg)
		}
		if ee.code == exitUsage {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return ee.code
	}
	// Cobra's own complaints: unknown command or flag, bad flag value.
	if strings.HasPrefix(err.Error(), "unknown command") {
		if flagErr := leadingFlagError(root, args); flagErr != nil {
			err = flagErr
		}
	}
	fmt.Fprintln(stderr, err)
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

// leadingFlagError parses the global flags in front of the command name.
// Cobra looks for the command before it parses flags, and takes the word
// after an unknown flag for that flag's value: "kvctl --bogus get k" would
// be reported as the unknown command "k" rather than the unknown flag.
func leadingFlagError(root *cobra.Command, args []string) error {
	fs := pflag.NewFlagSet(root.Name(), pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false) // stop at the command name
	fs.AddFlagSet(root.PersistentFlags())
	return fs.Parse(args)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kvctl",
		Short: "Read and write a KeyVal cluster",
		Long: `kvctl reads and writes a KeyVal cluster.

Any member can serve any command: followers forward writes to the leader.
Writes are applied exactly once even when kvctl retries them. Reads are
linearizable unless --serializable is given.

Exit codes: 0 success; 1 a key is missing (get), a CAS failed, or the server
refused the request; 2 usage error; 3 no member answered, no leader, or timed
out.

Every global flag can also be set by an environment variable named
KVCTL_ and the flag's name in capitals (KVCTL_ENDPOINTS, KVCTL_TIMEOUT,
KVCTL_OUTPUT, KVCTL_CACERT, KVCTL_CERT, KVCTL_KEY, KVCTL_USER,
KVCTL_PASSWORD); a flag given on the
command line wins.`,
		Version:       version.String("kvctl"),
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.applyEnv(cmd.Root().PersistentFlags())
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&a.endpoints, "endpoints", DefaultEndpoints,
		"comma-separated client addresses (host:port) of cluster members; an http:// or https:// prefix is accepted, https:// with --cacert (env KVCTL_ENDPOINTS)")
	f.DurationVar(&a.timeout, "timeout", 5*time.Second, "give up after this long, retries included (env KVCTL_TIMEOUT)")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json (env KVCTL_OUTPUT)")
	f.StringVar(&a.cacert, "cacert", "", "PEM file of the CA that signed the members' certificates; enables TLS (env KVCTL_CACERT)")
	f.StringVar(&a.cert, "cert", "", "PEM client certificate for TLS, with --key (env KVCTL_CERT)")
	f.StringVar(&a.key, "key", "", "PEM private key of --cert (env KVCTL_KEY)")
	f.StringVar(&a.user, "user", "", "log in as this user when auth is on: NAME:PASSWORD, or NAME with --password (env KVCTL_USER)")
	f.StringVar(&a.password, "password", "", "the password of --user (env KVCTL_PASSWORD)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageErrorf("%v", err)
	})
	root.SetVersionTemplate("{{.Version}}\n")
	root.Flags().Bool("version", false, version.Usage)
	root.AddCommand(a.putCommand(), a.getCommand(), a.deleteCommand(), a.casCommand(), a.listCommand(), a.statusCommand(),
		a.snapshotCommand(), a.memberCommand(), a.certsCommand(), a.authCommand(), a.userCommand(), a.roleCommand(), a.alarmCommand())
	return root
}

// applyEnv sets each global flag not given on the command line from its
// environment variable, if set.
func (a *app) applyEnv(flags *pflag.FlagSet) error {
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := a.lookupEnv(name)
		if !ok {
			return
		}
		if setErr := f.Value.Set(v); setErr != nil {
			err = usageErrorf("invalid %s=%q: %v", name, v, setErr)
		}
	})
	if err != nil {
		return err
	}
	switch a.output {
	case "table", "json":
	default:
		return usageErrorf("invalid --output %q: use table or json", a.output)
	}
	if a.timeout <= 0 {
		return usageErrorf("invalid --timeout %v: must be positive", a.timeout)
	}
	return nil
}

// commandGroup adds subs to cmd, which only holds them, and makes a missing
// or unknown subcommand a usage error (cobra would print the help and
// succeed).
func commandGroup(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	uses := make([]string, len(subs))
	for i, sub := range subs {
		uses[i] = cmd.Name() + " " + sub.Use
	}
	choices := strings.Join(uses, ", ")
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usageErrorf("%s needs a command: %s", cmd.Name(), choices)
		}
		hint := ""
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
		}
		return usageErrorf("unknown %s command %q%s: use %s", cmd.Name(), args[0], hint, choices)
	}
	return cmd
}

// exactArgs is cobra.ExactArgs with a message that shows the usage line.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %d argument(s), got %d: usage: %s", cmd.Name(), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

// session is what a command needs to talk to the cluster.
type session struct {
	ctx    context.Context
	c      *client.Client
	cancel context.CancelFunc
}

func (s *session) close() {
	s.cancel()
	_ = s.c.Close()
}

// connect builds a client from the global flags and a context bounded by
// --timeout for the whole command.
func (a *app) connect(cmd *cobra.Command) (*session, error) {
	tlsCfg, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tlsCfg == nil && strings.Contains(a.endpoints, "https://") {
		return nil, usageErrorf("--endpoints %q: https:// needs TLS: give --cacert (the CA that signed the members' certificates)", a.endpoints)
	}
	user, password, err := a.credentials()
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{
		Endpoints:      strings.Split(a.endpoints, ","),
		DialTimeout:    min(a.timeout, client.DefaultDialTimeout),
		RequestTimeout: a.timeout,
		TLS:            tlsCfg,
		Username:       user,
		Password:       password,
	})
	if err != nil {
		return nil, usageErrorf("invalid --endpoints %q: %v", a.endpoints, err)
	}
	a.cleanEndpoints = c.Endpoints()
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	return &session{ctx: ctx, c: c, cancel: cancel}, nil
}

// tlsConfig builds the TLS configuration from --cacert, --cert and --key;
// nil (plaintext) when none is given.
func (a *app) tlsConfig() (*tls.Config, error) {
	if a.cacert == "" && a.cert == "" && a.key == "" {
		return nil, nil
	}
	cfg, err := client.TLSConfig(a.cacert, a.cert, a.key)
	if err != nil {
		return nil, usageErrorf("TLS (--cacert, --cert, --key): %v", err)
	}
	return cfg, nil
}
