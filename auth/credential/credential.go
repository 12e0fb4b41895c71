// Package credential is how a caller proves who it is: bcrypt password
// hashes kept in the auth records, and tokens a member issues after a
// password check. It reads no clock itself (callers pass the time), but it
// draws salts from crypto/rand, so the deterministic state machine never
// calls it: the server hashes a password before proposing the change.
package credential

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
)

// A token proves that its holder logged in as a user: the user's name, the
// generation of the user's password, when it expires and an HMAC over
// them with the cluster's token key (replicated, so any member verifies a
// token any member issued, and tokens outlive leader changes). A token
// grants nothing by itself: each request's permissions are read from the
// current records.
const tokenVersion = "kv1"

// Identity is who a verified token or certificate says the caller is.
type Identity struct {
	User string
	// Generation is the password generation the token was issued for; 0
	// for a certificate, which has none.
	Generation uint64
}

// IssueToken makes a token for user valid until expires.
func IssueToken(key []byte, user string, generation uint64, expires time.Time) string {
	body := strings.Join([]string{tokenVersion,
		base64.RawURLEncoding.EncodeToString([]byte(user)),
		strconv.FormatUint(generation, 10),
		strconv.FormatInt(expires.Unix(), 10)}, ".")
	return body + "." + base64.RawURLEncoding.EncodeToString(sign(key, body))
}

func sign(key []byte, body string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// VerifyToken checks token's signature and expiry at now and returns whom
// it names. Whether that user still exists with that password generation
// is for the caller to check against the records (CheckIdentity).
func VerifyToken(key []byte, token string, now time.Time) (Identity, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 5 || parts[0] != tokenVersion {
		return Identity{}, auth.Refused("the token is not a KeyVal token")
	}
	mac, err := base64.RawURLEncoding.DecodeString(parts[4])
	if err != nil || !hmac.Equal(mac, sign(key, strings.Join(parts[:4], "."))) {
		return Identity{}, auth.Refused("the token's signature does not match: it was not issued by this cluster, or auth was re-enabled since")
	}
	user, err1 := base64.RawURLEncoding.DecodeString(parts[1])
	gen, err2 := strconv.ParseUint(parts[2], 10, 64)
	exp, err3 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return Identity{}, auth.Refused("the token is malformed")
	}
	if !now.Before(time.Unix(exp, 0)) {
		return Identity{}, auth.Refused("the token expired at %s; authenticate again", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return Identity{User: string(user), Generation: gen}, nil
}

// CheckIdentity checks that id's user still exists and, for a token, that
// its password has not changed since the token was issued.
func CheckIdentity(r auth.Records, id Identity) error {
	u, err := auth.User(r, id.User)
	if err != nil {
		return err
	}
	if u == nil {
		return auth.Denied("user %q does not exist", id.User)
	}
	if id.Generation != 0 && u.Generation != id.Generation {
		return auth.Refused("user %q's password changed (or the user was re-created) after the token was issued; authenticate again", id.User)
	}
	return nil
}

// HashPassword hashes a password with bcrypt at cost (bcrypt.MinCost to
// bcrypt.MaxCost; 0 means bcrypt.DefaultCost).
func HashPassword(password string, cost int) ([]byte, error) {
	if password == "" {
		return nil, auth.Refused("the password is empty")
	}
	if len(password) > 72 {
		return nil, auth.Refused("the password is %d bytes; bcrypt uses at most 72", len(password))
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// CheckPassword checks password against user's record, with the same
// answer for a wrong password, a missing user and a user without one, so
// a caller cannot probe which users exist. cost is the bcrypt cost this
// member hashes at (0: the default), which a missing user's comparison
// takes as long as.
func CheckPassword(r auth.Records, user, password string, cost int) (Identity, error) {
	u, err := auth.User(r, user)
	if err != nil {
		return Identity{}, err
	}
	wrong := auth.Refused("wrong user name or password")
	if u == nil || len(u.PasswordHash) == 0 {
		// Spend the time a real comparison would, so timing does not
		// tell a missing user from a wrong password either.
		_ = bcrypt.CompareHashAndPassword(dummyHash(cost), []byte(password))
		return Identity{}, wrong
	}
	if bcrypt.CompareHashAndPassword(u.PasswordHash, []byte(password)) != nil {
		return Identity{}, wrong
	}
	return Identity{User: user, Generation: u.Generation}, nil
}

// Prepare makes the hash a missing user's login is compared with, so the
// first such login takes no longer than the others.
func Prepare(cost int) { dummyHash(cost) }

// dummyHash is a bcrypt hash of nothing anyone types, at cost; made once
// per cost, as it takes as long as a login.
func dummyHash(cost int) []byte {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	dummies.Lock()
	defer dummies.Unlock()
	if h, ok := dummies.byCost[cost]; ok {
		return h
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("keyval: no such user"), cost)
	dummies.byCost[cost] = h
	return h
}

var dummies = struct {
	sync.Mutex
	byCost map[int][]byte
}{byCost: map[int][]byte{}}
