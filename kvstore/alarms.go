package kvstore

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// The storage quota is enforced in two places. The leader's server refuses
// a write that would take the store past its quota, before proposing it,
// and raises the NOSPACE alarm through the log; applying then refuses puts
// and compare-and-swaps while the alarm is raised. The apply decision
// depends only on the replicated alarm, so every member makes the same one
// whatever its own flags say.

// keyOverhead is what a key counts towards the store's bytes besides its
// own bytes and its value's: the stored version and index, roughly.
const keyOverhead = 16

// KeyBytes is what a key with a value of valueLen bytes counts towards the
// store's bytes (Usage.Bytes): what a write of it may add at most.
func KeyBytes(keyLen, valueLen int) uint64 {
	return uint64(keyLen+valueLen) + keyOverhead
}

// The texts of the alarm refusals (see apply.go's error texts).
const (
	errAlarmType = "invalid command: unknown alarm type %v"
	errNoSpace   = "no space: the NOSPACE alarm is raised (the store reached its storage quota); " +
		"puts and compare-and-swaps are refused until it is disarmed: delete keys to free space, then disarm it (kvctl alarm disarm)"
)

// EncodeAlarm returns the command that raises (or, with disarm, clears) an
// alarm of type t on behalf of member.
func EncodeAlarm(t AlarmType, disarm bool, member uint64) []byte {
	return mustEncode(&kvpb.Command{Op: &kvpb.Command_Alarm{Alarm: &kvpb.AlarmChange{Type: t, Disarm: disarm, MemberId: member}}})
}

// changeAlarm applies an AlarmChange. Alarms are kept sorted by type, so
// snapshots of equal states stay byte-identical.
func changeAlarm(st state, cmd *command, index uint64) Result {
	if cmd.clientID != 0 || cmd.seq != 0 {
		return invalid(st, StatusInvalid, errAdminIDs)
	}
	ch := cmd.alarm
	if ch.GetType() != AlarmNoSpace {
		return invalid(st, StatusInvalid, fmt.Sprintf(errAlarmType, ch.GetType()))
	}
	alarms := st.alarms()
	i := sort.Search(len(alarms), func(i int) bool { return alarms[i].Type >= ch.Type })
	present := i < len(alarms) && alarms[i].Type == ch.Type
	switch {
	case ch.Disarm && present:
		st.setAlarms(append(append([]*kvpb.Alarm(nil), alarms[:i]...), alarms[i+1:]...))
	case !ch.Disarm && !present:
		a := &kvpb.Alarm{Type: ch.Type, MemberId: ch.MemberId, Index: index}
		st.setAlarms(append(append(append([]*kvpb.Alarm(nil), alarms[:i]...), a), alarms[i:]...))
	}
	return Result{Status: StatusOK, Revision: st.revision()}
}

// noSpace reports whether a put or compare-and-swap of key is refused:
// the NOSPACE alarm is raised and the key is not one of KeyVal's own
// records (members' addresses are written when the configuration changes,
// which an alarm must not stop).
func noSpace(st state, key []byte) bool {
	if bytes.HasPrefix(key, reservedKeyPrefix) {
		return false
	}
	for _, a := range st.alarms() {
		if a.Type == AlarmNoSpace {
			return true
		}
	}
	return false
}

// reservedKeyPrefix starts KeyVal's own records (replica.IsReservedKey).
var reservedKeyPrefix = []byte("\x00keyval/")

// countPut records in the store's bytes a put of key and value over an old
// value of oldLen bytes (existed: the key was there).
func countPut(st state, key, value []byte, oldLen int, existed bool) {
	used := st.usedBytes() + KeyBytes(len(key), len(value))
	if existed {
		used -= min(used, KeyBytes(len(key), oldLen))
	}
	st.setUsedBytes(used)
}

// countDelete records in the store's bytes the delete of key and its value
// of oldLen bytes.
func countDelete(st state, key []byte, oldLen int) {
	st.setUsedBytes(st.usedBytes() - min(st.usedBytes(), KeyBytes(len(key), oldLen)))
}
