// Command kvctl reads and writes a KeyVal cluster from the shell: put, get,
// delete, cas, list and status. It talks to the three members that
// `make cluster-start` runs unless given --endpoints.
//
// Exit codes: 0 success; 1 a key is missing (get), a CAS failed, or the
// server refused the request; 2 usage errors; 3 no member answered, none
// had a leader, or the command timed out.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}
