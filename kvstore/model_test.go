package kvstore

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// model is the reference the implementations are checked against: the
// semantics of docs/kvstore.md written as plainly as possible over Go
// maps, sharing no logic with apply.go (only the error texts).
type model struct {
	maxClients int
	applied    uint64
	rev        uint64
	data       map[string]modelValue
	clients    map[uint64]*modelClient
	// clock is the session clock; noSpace the NOSPACE alarm, when raised
	// (by whom, at which index).
	clock   uint64
	noSpace *Alarm
}

type modelValue struct {
	value   []byte
	version uint64
}

type modelClient struct {
	lastSeq    uint64
	lastIndex  uint64
	lastActive uint64
	result     Result
}

func newModel(maxClients int) *model {
	return &model{maxClients: maxClients, data: map[string]modelValue{}, clients: map[uint64]*modelClient{}}
}

func (m *model) apply(entries []Entry) []Result {
	out := make([]Result, len(entries))
	for i, e := range entries {
		if e.Index <= m.applied {
			out[i] = Result{Index: e.Index, Status: StatusAlreadyApplied, Revision: m.rev}
			continue
		}
		m.applied = e.Index
		r := m.applyData(e.Index, e.Data)
		r.Index = e.Index
		out[i] = r
	}
	return out
}

func (m *model) fail(status Status, msg string) Result {
	return Result{Status: status, Err: msg, Revision: m.rev}
}

func (m *model) applyData(index uint64, data []byte) Result {
	if len(data) == 0 {
		return Result{Status: StatusNoop, Revision: m.rev}
	}
	var cmd kvpb.Command
	if proto.Unmarshal(data, &cmd) != nil {
		return m.fail(StatusMalformed, errMalformed)
	}
	if reg, ok := cmd.Op.(*kvpb.Command_Register); ok {
		if cmd.ClientId != 0 || cmd.Seq != 0 {
			return m.fail(StatusInvalid, errRegisterIDs)
		}
		return m.register(index, reg.Register)
	}
	switch op := cmd.Op.(type) {
	case *kvpb.Command_SessionClock, *kvpb.Command_Alarm:
		if cmd.ClientId != 0 || cmd.Seq != 0 {
			return m.fail(StatusInvalid, errAdminIDs)
		}
		if c, ok := op.(*kvpb.Command_SessionClock); ok {
			m.clock = max(m.clock, c.SessionClock.NowMs)
			return Result{Status: StatusOK, Revision: m.rev}
		}
		a := op.(*kvpb.Command_Alarm).Alarm
		if a.Type != kvpb.AlarmType_ALARM_TYPE_NOSPACE {
			return m.fail(StatusInvalid, fmt.Sprintf(errAlarmType, a.Type))
		}
		switch {
		case a.Disarm:
			m.noSpace = nil
		case m.noSpace == nil:
			m.noSpace = &Alarm{Type: a.Type, MemberID: a.MemberId, Index: index}
		}
		return Result{Status: StatusOK, Revision: m.rev}
	}
	if cmd.ClientId == 0 {
		return m.exec(&cmd)
	}
	if cmd.Seq == 0 {
		return m.fail(StatusInvalid, errSeqZero)
	}
	c, ok := m.clients[cmd.ClientId]
	if !ok {
		return m.fail(StatusSessionExpired, fmt.Sprintf(errNoSession, cmd.ClientId))
	}
	c.lastIndex, c.lastActive = index, m.clock
	switch {
	case cmd.Seq < c.lastSeq:
		return m.fail(StatusStaleDuplicate, fmt.Sprintf(errStale, cmd.Seq, cmd.ClientId, c.lastSeq))
	case cmd.Seq == c.lastSeq:
		r := c.result
		r.Duplicate = true
		return r
	}
	r := m.exec(&cmd)
	if r.Status != StatusNoSpace {
		c.lastSeq, c.result = cmd.Seq, r
	}
	return r
}

// register opens a session: with a policy (stamped by the proposer), only
// by reclaiming sessions idle past its TTL when the cap is reached, else
// refused; without one, by evicting the least recently used.
func (m *model) register(index uint64, reg *kvpb.Register) Result {
	m.clock = max(m.clock, reg.NowMs)
	limit := m.maxClients - 1
	if reg.MaxSessions != 0 {
		limit = int(reg.MaxSessions) - 1 // room for the new one first
	}
	for len(m.clients) > limit {
		oldest := uint64(0)
		for id, c := range m.clients { // picking the minimum: order-independent
			if oldest == 0 || c.lastIndex < m.clients[oldest].lastIndex {
				oldest = id
			}
		}
		if reg.MaxSessions != 0 && m.clock-min(m.clock, m.clients[oldest].lastActive) <= reg.IdleTtlMs {
			return m.fail(StatusSessionLimit, fmt.Sprintf(errSessionLimit, len(m.clients), reg.MaxSessions,
				time.Duration(reg.IdleTtlMs)*time.Millisecond))
		}
		delete(m.clients, oldest)
	}
	m.clients[index] = &modelClient{lastIndex: index, lastActive: m.clock}
	return Result{Status: StatusOK, Revision: m.rev, ClientID: index}
}

// usage is what the stores' Usage must say, counted from scratch.
func (m *model) usage() Usage {
	u := Usage{Sessions: uint64(len(m.clients)), SessionClockMs: m.clock}
	for k, v := range m.data {
		u.Bytes += uint64(len(k)+len(v.value)) + keyOverhead
	}
	for _, c := range m.clients {
		u.Bytes += sessionOverhead + uint64(len(c.result.CurrentValue)+len(c.result.Err))
	}
	if m.noSpace != nil {
		u.Alarms = []Alarm{*m.noSpace}
	}
	return u
}

// full says a put or compare-and-swap of key is refused for want of space.
func (m *model) full(key []byte) bool {
	return m.noSpace != nil && !strings.HasPrefix(string(key), "\x00keyval/")
}

func (m *model) badKey(key, value []byte) string {
	switch {
	case len(key) == 0:
		return errEmptyKey
	case len(key) > MaxKeySize:
		return fmt.Sprintf(errKeyTooLong, len(key), MaxKeySize)
	case len(value) > MaxValueSize:
		return fmt.Sprintf(errValueTooLong, len(value), MaxValueSize)
	}
	return ""
}

func (m *model) set(key string, value []byte, existed bool) Result {
	m.rev++
	m.data[key] = modelValue{value: append([]byte(nil), value...), version: m.rev}
	return Result{Status: StatusOK, Revision: m.rev, Existed: existed, Exists: true, Version: m.rev}
}

func (m *model) exec(cmd *kvpb.Command) Result {
	switch {
	case cmd.GetPut() != nil:
		p := cmd.GetPut()
		if msg := m.badKey(p.Key, p.Value); msg != "" {
			return m.fail(StatusInvalid, msg)
		}
		if m.full(p.Key) {
			return m.fail(StatusNoSpace, errNoSpace)
		}
		_, existed := m.data[string(p.Key)]
		return m.set(string(p.Key), p.Value, existed)
	case cmd.GetDelete() != nil:
		d := cmd.GetDelete()
		if msg := m.badKey(d.Key, nil); msg != "" {
			return m.fail(StatusInvalid, msg)
		}
		if _, ok := m.data[string(d.Key)]; !ok {
			return Result{Status: StatusOK, Revision: m.rev}
		}
		delete(m.data, string(d.Key))
		m.rev++
		return Result{Status: StatusOK, Revision: m.rev, Existed: true}
	case cmd.GetCompareAndSwap() != nil:
		c := cmd.GetCompareAndSwap()
		if msg := m.badKey(c.Key, c.NewValue); msg != "" {
			return m.fail(StatusInvalid, msg)
		}
		if m.full(c.Key) {
			return m.fail(StatusNoSpace, errNoSpace)
		}
		cur, found := m.data[string(c.Key)]
		if cur.version != c.ExpectedVersion {
			r := Result{Status: StatusCASFailed, Revision: m.rev, Existed: found, Exists: found, Version: cur.version}
			if len(cur.value) > 0 {
				r.CurrentValue = append([]byte(nil), cur.value...)
			}
			return r
		}
		return m.set(string(c.Key), c.NewValue, found)
	}
	return m.fail(StatusInvalid, errNoOp)
}

// sortedKeys lists the model's keys with prefix, ascending.
func (m *model) sortedKeys(prefix string) []string {
	var keys []string
	for k := range m.data {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// Command encoders for tests.

func encode(c *kvpb.Command) []byte {
	b, err := proto.Marshal(c)
	if err != nil {
		panic(err) // a test bug: every message here is valid
	}
	return b
}

func putCmd(client, seq uint64, key, value string) []byte {
	return encode(&kvpb.Command{ClientId: client, Seq: seq, Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: []byte(key), Value: []byte(value)}}})
}

func delCmd(client, seq uint64, key string) []byte {
	return encode(&kvpb.Command{ClientId: client, Seq: seq, Op: &kvpb.Command_Delete{Delete: &kvpb.Delete{Key: []byte(key)}}})
}

func casCmd(client, seq uint64, key string, expected uint64, value string) []byte {
	return encode(&kvpb.Command{ClientId: client, Seq: seq, Op: &kvpb.Command_CompareAndSwap{CompareAndSwap: &kvpb.CompareAndSwap{Key: []byte(key), ExpectedVersion: expected, NewValue: []byte(value)}}})
}

func registerCmd() []byte {
	return encode(&kvpb.Command{Op: &kvpb.Command_Register{Register: &kvpb.Register{}}})
}

func registerAt(nowMs, maxSessions, ttlMs uint64) []byte {
	return encode(&kvpb.Command{Op: &kvpb.Command_Register{Register: &kvpb.Register{NowMs: nowMs, MaxSessions: maxSessions, IdleTtlMs: ttlMs}}})
}

func clockCmd(nowMs uint64) []byte {
	return encode(&kvpb.Command{Op: &kvpb.Command_SessionClock{SessionClock: &kvpb.SessionClock{NowMs: nowMs}}})
}

func alarmCmd(disarm bool) []byte {
	return encode(&kvpb.Command{Op: &kvpb.Command_Alarm{Alarm: &kvpb.AlarmChange{Type: kvpb.AlarmType_ALARM_TYPE_NOSPACE, Disarm: disarm, MemberId: 7}}})
}
