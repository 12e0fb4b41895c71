package kvstore

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// records lets the auth package read and change its records inside the
// batch's transaction. A change is a write like any other: it advances the
// revision.
type records struct{ st state }

// authMemo is whether auth is enabled, as read from the records and until
// one of them is written: every write is checked against it, and reading
// and decoding the configuration for each one was a fifth of what the
// apply path allocated (BenchmarkBoltApplyServer). changed says an auth
// record was written since the store last counted it (Bolt.AuthGeneration).
type authMemo struct{ known, on, changed bool }

// forget drops what the memo knows if key is an auth record.
func (m *authMemo) forget(key []byte) {
	if bytes.HasPrefix(key, authPrefix) {
		m.known, m.changed = false, true
	}
}

var authPrefix = []byte(auth.Prefix)

// authEnabled is auth.Enabled on st, read once until an auth record
// changes.
func authEnabled(st state) (bool, error) {
	m := st.memo()
	if m.known {
		return m.on, nil
	}
	on, err := auth.Enabled(records{st})
	if err != nil {
		return false, err
	}
	m.known, m.on = true, on
	return on, nil
}

func (r records) Get(key []byte) ([]byte, bool, error) {
	v, _, found, err := r.st.get(key)
	return v, found, err
}

func (r records) Put(key, value []byte) error {
	rev := r.st.revision() + 1
	cur, found, err := r.st.lookup(key)
	if err != nil {
		return err
	}
	if err := r.st.put(key, value, cur.next(rev, found)); err != nil {
		return err
	}
	r.st.setRevision(rev)
	return nil
}

func (r records) Delete(key []byte) error {
	rev := r.st.revision() + 1
	if err := r.st.del(key, rev); err != nil {
		return err
	}
	r.st.setRevision(rev)
	return nil
}

// AuthRecords reads the auth records of s's applied state, for checks
// made outside apply (the simulator's reads; the server reads through
// Bolt.AuthView, which keeps what it read). It cannot change them:
// changes go through the log.
func AuthRecords(s Store) auth.Records { return storeRecords{s} }

type storeRecords struct{ store Store }

func (r storeRecords) Get(key []byte) ([]byte, bool, error) {
	g, err := r.store.Get(key)
	return g.Value, g.Found, err
}

var errReadOnly = errors.New("kvstore: auth records change only through the log")

func (storeRecords) Put(_, _ []byte) error { return errReadOnly }
func (storeRecords) Delete(_ []byte) error { return errReadOnly }

// authorize checks, once auth is enabled, that the command's user may run
// it. It returns a refusal as a result (ok false) or a storage failure.
// Auth changes check their own rights (auth.Apply); sessions' clocks and
// alarms are proposed by the members themselves.
func authorize(st state, cmd *command) (Result, bool, error) {
	if cmd.op == opAuth {
		return Result{}, true, nil
	}
	on, err := authEnabled(st)
	if err != nil || !on {
		return Result{}, err == nil, err
	}
	r := records{st}
	switch cmd.op {
	case opRegister:
		err = auth.RequireUser(r, cmd.user)
	case opPut, opDelete:
		// The client API refuses KeyVal's own keys, so a command that
		// names one was proposed by a member itself.
		if cmd.user == "" && bytes.HasPrefix(cmd.key, reservedKeyPrefix) {
			return Result{}, true, nil
		}
		err = auth.Allowed(r, cmd.user, kvpb.AuthPermission_TYPE_WRITE, cmd.key, nil)
	case opCAS:
		// A failed swap answers with the current value: it reads too.
		err = auth.Allowed(r, cmd.user, kvpb.AuthPermission_TYPE_READWRITE, cmd.key, nil)
	default:
		return Result{}, true, nil // nothing to run; execute says so
	}
	return authResult(st, err)
}

// executeAs runs a write once its user may. It comes after the session's
// duplicate check: a retry of a write that was applied gets its remembered
// result even if the user has lost the permission since, and a refusal is
// remembered like any result, so the same seq cannot be applied later.
func executeAs(st state, cmd *command) (Result, error) {
	if r, ok, err := authorize(st, cmd); err != nil || !ok {
		return r, err
	}
	return execute(st, cmd)
}

// sessionOwner refuses, once auth is enabled, a command naming a session
// another user opened (or one opened while auth was off): it would get that
// user's remembered result, or move the session's seq past that user's
// writes. It is answered as an expired session, so a client that opened its
// session before auth was enabled registers a new one; nothing is
// remembered.
func sessionOwner(st state, cmd *command, rec *kvpb.ClientRecord) (Result, bool, error) {
	if cmd.user == rec.User {
		return Result{}, true, nil
	}
	on, err := authEnabled(st)
	if err != nil || !on {
		return Result{}, err == nil, err
	}
	return invalid(st, StatusSessionExpired, fmt.Sprintf(errSessionOwner, cmd.clientID)), false, nil
}

// applyAuth runs an auth change.
func applyAuth(st state, cmd *command, index uint64) (Result, error) {
	r, _, err := authResult(st, auth.Apply(records{st}, cmd.user, cmd.auth, index))
	if err != nil || r.Status != 0 {
		return r, err
	}
	return Result{Status: StatusOK, Revision: st.revision()}, nil
}

// authResult turns an auth refusal into the command's result (ok false)
// and passes a storage failure on.
func authResult(st state, err error) (Result, bool, error) {
	switch {
	case err == nil:
		return Result{}, true, nil
	case errors.Is(err, auth.ErrDenied):
		return invalid(st, StatusPermissionDenied, err.Error()), false, nil
	case errors.Is(err, auth.ErrRefused):
		return invalid(st, StatusInvalid, err.Error()), false, nil
	}
	return Result{}, false, err
}
