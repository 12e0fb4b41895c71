package kvstore

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// AuthView is the Bolt store's auth records as of one auth generation
// (AuthGeneration), each read from the store once: every request is
// checked against them, and a read of the store commits what Apply left
// open (begin), so reading them for every request cost a commit per
// request under writes. A record read while the generation stood still
// is kept; one read across a change is not. Only records found are kept:
// what is kept is then bounded by the records the store holds, where
// keeping misses would let anyone grow it with logins as names that do
// not exist. Its methods may be called concurrently; what Get returns is
// shared and must not be modified.
type AuthView struct {
	b    *Bolt
	gen  uint64
	read sync.Map // string key → its value
	cfg  atomic.Pointer[kvpb.AuthConfig]
}

var _ auth.Records = (*AuthView)(nil)

// AuthView is the view of the current auth generation.
func (b *Bolt) AuthView() *AuthView {
	gen := b.AuthGeneration()
	if v := b.authView.Load(); v != nil && v.gen == gen {
		return v
	}
	v := &AuthView{b: b, gen: gen}
	b.authView.Store(v)
	return v
}

// Get implements auth.Records. A key outside the auth records is read
// and not kept: the generation does not follow its changes.
func (v *AuthView) Get(key []byte) ([]byte, bool, error) {
	if value, ok := v.read.Load(string(key)); ok {
		return value.([]byte), true, nil
	}
	g, err := v.b.Get(key)
	if err != nil {
		return nil, false, err
	}
	if g.Found && bytes.HasPrefix(key, authPrefix) && v.b.AuthGeneration() == v.gen {
		v.read.Store(string(key), g.Value)
	}
	return g.Value, g.Found, nil
}

// Put implements auth.Records: refused, as for AuthRecords.
func (*AuthView) Put(_, _ []byte) error { return errReadOnly }

// Delete implements auth.Records: refused.
func (*AuthView) Delete(_ []byte) error { return errReadOnly }

// Config is auth.Config of the view, decoded once.
func (v *AuthView) Config() (*kvpb.AuthConfig, error) {
	if c := v.cfg.Load(); c != nil {
		return c, nil
	}
	c, err := auth.Config(v)
	if err == nil && v.b.AuthGeneration() == v.gen {
		v.cfg.Store(c)
	}
	return c, err
}
