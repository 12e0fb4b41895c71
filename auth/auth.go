// Package auth is KeyVal's access control: users, roles and the
// permissions roles grant on keys, kept as records under a reserved prefix
// of the replicated key space, so every member holds the same records and
// snapshots and backups carry them.
//
// The package is deterministic: it reads and writes records through the
// Records a caller hands it, and reads no clock and draws no randomness.
// The state machine (kvstore) applies changes and checks a write's
// permission at apply, in log order, so a revocation takes effect at the
// same index on every member; the server checks reads against its applied
// state after the read's barrier. Passwords and tokens are in
// auth/credential.
package auth

import (
	"bytes"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Prefix is where auth records live: inside the reserved "\x00keyval/"
// space that clients can neither read nor write.
const Prefix = "\x00keyval/auth/"

// RootUser and RootRole are the names etcd's users know: the root role may
// do everything, including administering auth, membership and backups.
const (
	RootUser = "root"
	RootRole = "root"
)

// MaxNameBytes bounds user and role names.
const MaxNameBytes = 128

var (
	configKey  = []byte(Prefix + "config")
	userPrefix = Prefix + "user/"
	rolePrefix = Prefix + "role/"
)

// UserKey and RoleKey are where a user's and a role's records live.
func UserKey(name string) []byte { return []byte(userPrefix + name) }
func RoleKey(name string) []byte { return []byte(rolePrefix + name) }

// UserPrefix and RolePrefix are the key prefixes that list all users and
// all roles.
func UserPrefix() []byte { return []byte(userPrefix) }
func RolePrefix() []byte { return []byte(rolePrefix) }

// Records is the record store the package works on: the state machine's
// open transaction when applying, a read view when checking.
type Records interface {
	// Get returns the record at key; the bytes are only read, and only
	// until the next call.
	Get(key []byte) (value []byte, found bool, err error)
	Put(key, value []byte) error
	Delete(key []byte) error
}

// ErrRefused is matched (errors.Is) by every refusal of a change or a
// request: the request was understood and is not allowed or not possible.
// Anything else is a storage failure.
var ErrRefused = errors.New("refused")

// ErrDenied is matched (with ErrRefused) when the caller lacks a permission.
var ErrDenied = errors.New("permission denied")

// refusal is a refusal whose message says what to do; a denial's message
// starts with "permission denied".
type refusal struct {
	msg    string
	denied bool
}

func (r *refusal) Error() string {
	if r.denied {
		return "permission denied: " + r.msg
	}
	return r.msg
}

func (r *refusal) Is(target error) bool {
	return target == ErrRefused || (r.denied && target == ErrDenied)
}

// Refused makes a refusal.
func Refused(format string, args ...any) error {
	return refused(format, args...)
}

func refused(format string, args ...any) error {
	return &refusal{msg: fmt.Sprintf(format, args...)}
}

// Denied makes a denial.
func Denied(format string, args ...any) error {
	return denied(format, args...)
}

func denied(format string, args ...any) error {
	return &refusal{msg: fmt.Sprintf(format, args...), denied: true}
}

// CheckName refuses a user or role name that is empty, too long, not UTF-8
// or holds control characters (names are printed in messages and lists).
func CheckName(kind, name string) error {
	switch {
	case name == "":
		return refused("the %s name is empty", kind)
	case len(name) > MaxNameBytes:
		return refused("the %s name is %d bytes; the limit is %d", kind, len(name), MaxNameBytes)
	case !utf8.ValidString(name):
		return refused("the %s name is not valid UTF-8", kind)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return refused("the %s name %q holds a control character", kind, name)
		}
	}
	return nil
}

// Config reads the auth switch; a missing record means auth is off.
func Config(r Records) (*kvpb.AuthConfig, error) {
	var c kvpb.AuthConfig
	ok, err := load(r, configKey, &c)
	if err != nil || !ok {
		return &kvpb.AuthConfig{}, err
	}
	return &c, nil
}

// Enabled reports whether auth is enforced.
func Enabled(r Records) (bool, error) {
	c, err := Config(r)
	return c.GetEnabled(), err
}

// User reads a user's record, or nil if there is no such user.
func User(r Records, name string) (*kvpb.AuthUser, error) {
	var u kvpb.AuthUser
	ok, err := load(r, UserKey(name), &u)
	if err != nil || !ok {
		return nil, err
	}
	return &u, nil
}

// Role reads a role's record, or nil if there is no such role.
func Role(r Records, name string) (*kvpb.AuthRole, error) {
	var ro kvpb.AuthRole
	ok, err := load(r, RoleKey(name), &ro)
	if err != nil || !ok {
		return nil, err
	}
	return &ro, nil
}

func load(r Records, key []byte, m proto.Message) (bool, error) {
	b, ok, err := r.Get(key)
	if err != nil || !ok {
		return false, err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return false, fmt.Errorf("auth record %q is damaged: %w", key, err)
	}
	return true, nil
}

func store(r Records, key []byte, m proto.Message) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode auth record %q: %w", key, err)
	}
	return r.Put(key, b)
}

// hasRole reports whether u holds role.
func hasRole(u *kvpb.AuthUser, role string) bool {
	for _, r := range u.GetRoles() {
		if r == role {
			return true
		}
	}
	return false
}

// IsRoot reports whether u holds the root role.
func IsRoot(u *kvpb.AuthUser) bool { return u != nil && hasRole(u, RootRole) }

// keyEnd is the exclusive end of a permission or request: range_end, or
// just past key for a single key. nil means "no end".
func keyEnd(key, rangeEnd []byte) []byte {
	switch {
	case len(rangeEnd) == 0:
		return append(append(make([]byte, 0, len(key)+1), key...), 0)
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return nil
	}
	return rangeEnd
}

// PrefixEnd is the range_end that makes [prefix, end) every key starting
// with prefix ("\x00", every key, for an empty or all-0xff prefix).
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// grants reports whether t (what a permission gives) includes want.
func grants(t, want kvpb.AuthPermission_Type) bool {
	return t == want || t == kvpb.AuthPermission_TYPE_READWRITE
}

// allows reports whether granted lets one do want on [key, end): reading
// and writing may come from different permissions.
func allows(granted []*kvpb.AuthPermission, want kvpb.AuthPermission_Type, key, end []byte) bool {
	if want == kvpb.AuthPermission_TYPE_READWRITE {
		return allows(granted, kvpb.AuthPermission_TYPE_READ, key, end) &&
			allows(granted, kvpb.AuthPermission_TYPE_WRITE, key, end)
	}
	var perms []*kvpb.AuthPermission
	for _, p := range granted {
		if grants(p.Type, want) {
			perms = append(perms, p)
		}
	}
	return covered(perms, key, end)
}

// covered reports whether the intervals [p.key, end(p)) of perms cover
// [key, end) entirely.
func covered(perms []*kvpb.AuthPermission, key, end []byte) bool {
	pos := key
	for progressed := true; progressed; {
		progressed = false
		for _, p := range perms {
			pEnd := keyEnd(p.Key, p.RangeEnd)
			if bytes.Compare(p.Key, pos) > 0 || (pEnd != nil && bytes.Compare(pEnd, pos) <= 0) {
				continue // starts after pos, or ends at or before it
			}
			if pEnd == nil || (end != nil && bytes.Compare(pEnd, end) >= 0) {
				return true
			}
			pos, progressed = pEnd, true
		}
	}
	return false
}

// Allowed checks that user may do want on [key, rangeEnd) (rangeEnd as in
// AuthPermission). The error wraps ErrDenied, naming what is missing, or
// is a storage failure.
func Allowed(r Records, user string, want kvpb.AuthPermission_Type, key, rangeEnd []byte) error {
	u, err := existing(r, user)
	if err != nil {
		return err
	}
	if IsRoot(u) {
		return nil
	}
	var granted []*kvpb.AuthPermission
	for _, name := range u.Roles {
		ro, err := Role(r, name)
		if err != nil {
			return err
		}
		granted = append(granted, ro.GetPermissions()...)
	}
	if allows(granted, want, key, keyEnd(key, rangeEnd)) {
		return nil
	}
	return denied("user %q has no role granting %s on %s", user, typeName(want), describeRange(key, rangeEnd))
}

// Check is Allowed when auth is enabled, and nil when it is not.
func Check(r Records, user string, want kvpb.AuthPermission_Type, key, rangeEnd []byte) error {
	on, err := Enabled(r)
	if err != nil || !on {
		return err
	}
	return Allowed(r, user, want, key, rangeEnd)
}

// NoUser is the denial of a call that names no user while auth is on:
// etcd's API answers it with etcd's ErrUserEmpty, on which clientv3 logs in
// and retries (a client with a password, started while auth was off).
const NoUser = "authentication required: auth is enabled and the request carries no token or client certificate"

// existing reads the record of the user a request runs as, refusing a
// request with no user or a user that does not exist.
func existing(r Records, user string) (*kvpb.AuthUser, error) {
	if user == "" {
		return nil, denied("%s", NoUser)
	}
	u, err := User(r, user)
	if err == nil && u == nil {
		err = denied("user %q does not exist", user)
	}
	return u, err
}

// RequireRoot checks that user holds the root role.
func RequireRoot(r Records, user string) error {
	u, err := existing(r, user)
	if err != nil {
		return err
	}
	if !IsRoot(u) {
		return denied("user %q lacks role %q, which this request needs", user, RootRole)
	}
	return nil
}

// RequireUser checks that user exists (what opening a session needs).
func RequireUser(r Records, user string) error {
	_, err := existing(r, user)
	return err
}

func typeName(t kvpb.AuthPermission_Type) string {
	switch t {
	case kvpb.AuthPermission_TYPE_READ:
		return "read"
	case kvpb.AuthPermission_TYPE_WRITE:
		return "write"
	case kvpb.AuthPermission_TYPE_READWRITE:
		return "readwrite"
	}
	return t.String()
}

// ParseType reads "read", "write" or "readwrite".
func ParseType(s string) (kvpb.AuthPermission_Type, error) {
	for _, t := range []kvpb.AuthPermission_Type{kvpb.AuthPermission_TYPE_READ, kvpb.AuthPermission_TYPE_WRITE, kvpb.AuthPermission_TYPE_READWRITE} {
		if s == typeName(t) {
			return t, nil
		}
	}
	return 0, refused("permission type %q: want read, write or readwrite", s)
}

// DescribePermission says what a permission allows, for lists and messages.
func DescribePermission(p *kvpb.AuthPermission) string {
	return typeName(p.Type) + " " + describeRange(p.Key, p.RangeEnd)
}

func describeRange(key, rangeEnd []byte) string {
	switch {
	case len(rangeEnd) == 0:
		return fmt.Sprintf("key %q", key)
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return fmt.Sprintf("keys from %q on", key)
	case bytes.Equal(rangeEnd, PrefixEnd(key)):
		return fmt.Sprintf("keys with prefix %q", key)
	}
	return fmt.Sprintf("keys [%q, %q)", key, rangeEnd)
}
