package kvstore

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Sessions expire by idle time, measured on a clock that travels in the
// log: a member's own clock would make members disagree on which session
// is idle. The proposer stamps its wall clock into every Register (and the
// leader into a SessionClock entry about once a second while writes
// arrive); the store's session clock is the largest time stamped so far,
// and a session's last activity is that clock when an entry last named it.
// docs/kvstore.md argues why an active session never looks idle.

// SessionPolicy is what the proposer of a Register decides with: the cap
// on open sessions and how long one must have been idle before a Register
// that finds the cap reached may reclaim it.
type SessionPolicy struct {
	MaxSessions uint64
	IdleTTL     time.Duration
}

// Defaults for SessionPolicy (keyvald's --max-sessions, --session-ttl).
const (
	DefaultMaxSessions = DefaultMaxClients
	DefaultSessionTTL  = 10 * time.Minute
)

// ClockTickEvery is how often, at most, a leader with writes arriving
// proposes a SessionClock entry.
const ClockTickEvery = time.Second

// StampRegister is the Register a server proposes at nowMs (its wall
// clock, Unix milliseconds) under policy p.
func StampRegister(nowMs uint64, p SessionPolicy) *kvpb.Register {
	return &kvpb.Register{NowMs: nowMs, MaxSessions: max(p.MaxSessions, 1), IdleTtlMs: uint64(p.IdleTTL / time.Millisecond)}
}

// EncodeRegister is StampRegister's command, encoded.
func EncodeRegister(nowMs uint64, p SessionPolicy) []byte {
	return mustEncode(&kvpb.Command{Op: &kvpb.Command_Register{Register: StampRegister(nowMs, p)}})
}

// EncodeSessionClock returns the command that advances the session clock
// to nowMs (Unix milliseconds).
func EncodeSessionClock(nowMs uint64) []byte {
	return mustEncode(&kvpb.Command{Op: &kvpb.Command_SessionClock{SessionClock: &kvpb.SessionClock{NowMs: nowMs}}})
}

// mustEncode encodes a command built in this package: such a message
// always encodes.
func mustEncode(c *kvpb.Command) []byte {
	b, err := proto.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("kvstore: encode %v: %v", c, err))
	}
	return b
}

// ClockTicker tells a leader when its writes should carry a SessionClock
// entry along: at most one per ClockTickEvery. Not safe for concurrent use
// (the server's event loop and the simulator's node each own one).
type ClockTicker struct {
	last uint64 // ms of the last tick; 0: none yet
}

// Due reports whether a SessionClock entry should be proposed at nowMs,
// and if so counts it as proposed.
func (t *ClockTicker) Due(nowMs uint64) bool {
	// A clock that went back ticks again only once past the last tick:
	// the session clock never goes back anyway.
	if t.last != 0 && nowMs < t.last+uint64(ClockTickEvery/time.Millisecond) {
		return false
	}
	t.last = nowMs
	return true
}

// The texts of the session refusals (see apply.go's error texts).
const (
	errAdminIDs     = "invalid command: a session clock or alarm command must not carry client_id or seq"
	errSessionLimit = "session cap reached: %d sessions are open (the cap is %d) and none has been idle longer than %v; retry later"
)

// advanceClock moves the session clock to nowMs if that is later.
func advanceClock(st state, nowMs uint64) {
	if nowMs > st.sessionClock() {
		st.setSessionClock(nowMs)
	}
}

// idleMs is how long rec has been idle by the session clock.
func idleMs(st state, rec *kvpb.ClientRecord) uint64 {
	if now := st.sessionClock(); now > rec.LastActiveMs {
		return now - rec.LastActiveMs
	}
	return 0
}

// sessionOverhead is what a session counts towards the store's bytes
// besides the value and error text its remembered result holds.
const sessionOverhead = 64

// sessionBytes is what rec counts towards the store's bytes.
func sessionBytes(rec *kvpb.ClientRecord) uint64 {
	return sessionOverhead + uint64(len(rec.GetResult().GetCurrentValue())+len(rec.GetResult().GetError()))
}

// registerSession opens a session under the policy the command carries.
// When the cap is reached, the least recently used sessions are reclaimed
// only while they have been idle longer than the TTL; if that does not make
// room, the Register is refused and no session is touched. Sessions are
// ordered by last_index, and the clock only moves forward along the log,
// so the least recently used session is also the longest idle.
func registerSession(st state, cmd *command, index uint64) (Result, error) {
	advanceClock(st, cmd.nowMs)
	for st.clientCount() >= cmd.maxSessions {
		oldest, err := st.oldestClient()
		if err != nil {
			return Result{}, err
		}
		if oldest == nil || idleMs(st, oldest) <= cmd.ttlMs {
			ttl := time.Duration(cmd.ttlMs) * time.Millisecond
			return invalid(st, StatusSessionLimit, fmt.Sprintf(errSessionLimit, st.clientCount(), cmd.maxSessions, ttl)), nil
		}
		if err := dropSession(st, oldest); err != nil {
			return Result{}, err
		}
	}
	return openSession(st, index, cmd.user)
}

// openSession stores a new session of user whose id is index.
func openSession(st state, index uint64, user string) (Result, error) {
	rec := &kvpb.ClientRecord{ClientId: index, LastIndex: index, LastActiveMs: st.sessionClock(), User: user}
	if err := st.putClient(rec, 0, true); err != nil {
		return Result{}, err
	}
	st.setUsedBytes(st.usedBytes() + sessionBytes(rec))
	return Result{Status: StatusOK, Revision: st.revision(), ClientID: index}, nil
}

// dropSession removes a session (reclaimed or evicted).
func dropSession(st state, rec *kvpb.ClientRecord) error {
	if err := st.removeClient(rec); err != nil {
		return err
	}
	st.setUsedBytes(st.usedBytes() - min(st.usedBytes(), sessionBytes(rec)))
	return nil
}

// evictLegacy is what a Register without a policy (from a build before
// session TTLs) did: evict the least recently used sessions past
// maxClients, idle or not.
func evictLegacy(st state, maxClients uint64) error {
	for st.clientCount() > maxClients {
		oldest, err := st.oldestClient()
		if err != nil {
			return err
		}
		if oldest == nil {
			return fmt.Errorf("%w: %d sessions counted but none found", ErrCorrupt, st.clientCount())
		}
		if err := dropSession(st, oldest); err != nil {
			return err
		}
	}
	return nil
}

// Usage is what a store holds against its limits.
type Usage struct {
	// Bytes is the store's logical size: every key's bytes, its value's
	// and keyOverhead, plus every session's sessionOverhead and the value
	// and error text it remembers. Deletes free it at once.
	Bytes uint64
	// Sessions is the number of open exactly-once sessions.
	Sessions uint64
	// SessionClockMs is the session clock (Unix milliseconds; 0 until the
	// first stamped command).
	SessionClockMs uint64
	// Alarms are the raised alarms, by type.
	Alarms []Alarm
}

// Alarm is a raised alarm: which, who raised it, and at which log index.
type Alarm struct {
	Type     AlarmType
	MemberID uint64
	Index    uint64
}

// AlarmType names an alarm; see kvpb.AlarmType.
type AlarmType = kvpb.AlarmType

// AlarmNoSpace is raised when the store reached its storage quota.
const AlarmNoSpace = kvpb.AlarmType_ALARM_TYPE_NOSPACE

// Raised reports whether an alarm of type t is raised.
func (u Usage) Raised(t AlarmType) bool {
	for _, a := range u.Alarms {
		if a.Type == t {
			return true
		}
	}
	return false
}

func alarmsFromProto(pb []*kvpb.Alarm) []Alarm {
	var out []Alarm
	for _, a := range pb {
		out = append(out, Alarm{Type: a.Type, MemberID: a.MemberId, Index: a.Index})
	}
	return out
}
