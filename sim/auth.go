package sim

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// The auth workload (Options.Auth). The clients run as one user, worker,
// whose role grants readwrite on each key; an administrator (root) first
// sets that up and enables auth, then revokes and grants the permission
// key by key while the clients work. Its changes go into the history as
// operations on their key, so the checker holds every allowed and refused
// operation to the permissions in force at its linearization point: a
// write is checked where it is applied, a read where it is released, as
// the server does.
const (
	workerUser = "worker"
	workerRole = "worker"
	adminUser  = "root"
)

// simTokenKey stands for the random key a server draws when enabling auth;
// the simulator issues no tokens.
var simTokenKey = bytes.Repeat([]byte{0x5e}, 32)

func authCommand(c *kvpb.AuthChange) []byte {
	return mustMarshal(&kvpb.Command{User: adminUser, Op: &kvpb.Command_AuthChange{AuthChange: c}})
}

func readwrite(key string) *kvpb.AuthPermission {
	return &kvpb.AuthPermission{Type: kvpb.AuthPermission_TYPE_READWRITE, Key: []byte(key)}
}

// authSetup is what the administrator proposes, one after another, before
// it changes anything the history records: every key starts allowed, so
// the model's initial state holds before, during and after the setup.
func (w *world) authSetup() [][]byte {
	cmds := [][]byte{authCommand(&kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_ADD, Role: workerRole})}
	for i := range w.keys {
		cmds = append(cmds, authCommand(&kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_GRANT, Role: workerRole, Permission: readwrite(w.keyName(i))}))
	}
	return append(cmds,
		authCommand(&kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_ADD, User: workerUser}),
		authCommand(&kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_GRANT_ROLE, User: workerUser, Role: workerRole}),
		// Root needs a password for auth to be enabled; the simulator
		// logs nobody in, so any bytes stand for its hash.
		authCommand(&kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_ADD, User: adminUser, PasswordHash: []byte("sim")}),
		authCommand(&kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_GRANT_ROLE, User: adminUser, Role: auth.RootRole}),
		authCommand(&kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: simTokenKey}))
}

// startAdmin runs the setup, each step retried until it is answered (a
// retry of a step that was applied is refused as done already, which is
// as good).
func (c *client) startAdmin() {
	c.setup = c.w.authSetup()
	c.nextSetupStep()
}

func (c *client) nextSetupStep() {
	if len(c.setup) == 0 {
		c.w.logf("auth enabled")
		c.next()
		return
	}
	c.op = &clientOp{setup: true, cmd: c.setup[0]}
	c.setup = c.setup[1:]
	c.attempt()
}

// setupAnswered takes the answer to a setup step.
func (c *client) setupAnswered(r kvstore.Result) {
	if r.Status != kvstore.StatusOK && r.Status != kvstore.StatusInvalid {
		c.w.fail(fmt.Errorf("auth setup: %v %s", r.Status, r.Err))
		return
	}
	c.nextSetupStep()
}

// beginAdmin starts a revoke or a grant of worker's permission on a key.
func (c *client) beginAdmin() *clientOp {
	key := c.w.keyName(c.rng.IntN(c.w.keys))
	op := &clientOp{startedAt: c.w.clock.now, in: lin.Grant(key)}
	kind := kvpb.AuthChange_KIND_ROLE_GRANT
	if c.rng.IntN(2) == 0 {
		op.in, kind = lin.Revoke(key), kvpb.AuthChange_KIND_ROLE_REVOKE
	}
	op.cmd = authCommand(&kvpb.AuthChange{Kind: kind, Role: workerRole, Permission: readwrite(key)})
	return op
}

// adminOutput is what the administrator learns: done, whether the change
// was made or refused as one already in force.
func adminOutput(r kvstore.Result) (lin.Output, error) {
	if r.Status != kvstore.StatusOK && r.Status != kvstore.StatusInvalid {
		return lin.Output{}, fmt.Errorf("unexpected status %v: %s", r.Status, r.Err)
	}
	return lin.Output{}, nil
}

// readAllowed checks a read's permission when it is released, against the
// state it reads, as the server does after a read's barrier.
func (n *node) readAllowed(rq *request) (bool, error) {
	if rq.user == "" {
		return true, nil
	}
	err := auth.Check(kvstore.AuthRecords(n.rep.Store()), rq.user, kvpb.AuthPermission_TYPE_READ, []byte(rq.key), nil)
	if errors.Is(err, auth.ErrDenied) {
		return false, nil
	}
	return err == nil, err
}

// encodeRegister is the Register a node proposes: stamped with its clock
// and policy, as the server does, and naming the client's user.
func (n *node) encodeRegister(user string) []byte {
	if user == "" {
		return kvstore.EncodeRegister(n.wallMs(), simSessions)
	}
	return mustMarshal(&kvpb.Command{User: user, Op: &kvpb.Command_Register{Register: kvstore.StampRegister(n.wallMs(), simSessions)}})
}
