// Command etcd is etcd's server at the version go.mod pins, built from the
// Go module proxy alone (make etcd) so that make bench-compare can run an
// etcd cluster beside KeyVal's. It is a module of its own so that etcd's
// server and its dependencies never enter KeyVal's module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
