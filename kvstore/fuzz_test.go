package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Seed corpus: testdata/fuzz/<target>/ holds the committed seeds (written
// by TestWriteFuzzCorpus); the f.Add calls keep a few in the code too.

func applySeeds() map[string][]byte {
	return map[string][]byte{
		"put":            putCmd(0, 0, "k", "v"),
		"put-session":    putCmd(1, 2, "k", "v"),
		"dup-session":    putCmd(1, 1, "k", "v1"),
		"stale-session":  putCmd(1, 0, "k", "v"),
		"delete":         delCmd(1, 5, "k"),
		"cas-hit":        casCmd(0, 0, "k", 2, "w"),
		"cas-miss":       casCmd(0, 0, "k", 1, "w"),
		"cas-absent":     casCmd(0, 0, "new", 0, "w"),
		"register":       registerCmd(),
		"register-bad":   encode(&kvpb.Command{ClientId: 1, Op: &kvpb.Command_Register{Register: &kvpb.Register{}}}),
		"expired":        putCmd(99, 1, "k", "v"),
		"empty-key":      putCmd(0, 0, "", "v"),
		"no-op":          encode(&kvpb.Command{ClientId: 1, Seq: 9}),
		"empty":          {},
		"garbage":        {0xff, 0x00, 0x13},
		"unknown-field":  append(putCmd(0, 0, "k", "v"), 0xf8, 0x01, 0x01),
		"truncated":      putCmd(0, 0, "key", "value")[:6],
		"long-key-start": putCmd(0, 0, string(make([]byte, 300)), "v"),
	}
}

// FuzzApplyCommand applies arbitrary entry bytes (twice, to reach the
// duplicate paths) after a fixed prefix, to the memory store and to the
// model: it must never panic, and both must agree on results and state.
func FuzzApplyCommand(f *testing.F) {
	f.Add(putCmd(1, 2, "k", "v"))
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if outsideModel(data) {
			t.Skip("a command the model does not cover")
		}
		s := NewMemory(Options{MaxClients: 2})
		m := newModel(2)
		prefix := []Entry{{Index: 1, Data: registerCmd()}, {Index: 2, Data: putCmd(1, 1, "k", "v1")}, {Index: 3, Data: putCmd(0, 0, "a", "x")}}
		entries := append(prefix, Entry{Index: 4, Data: data}, Entry{Index: 5, Data: data})
		got, err := s.Apply(entries)
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		want := m.apply(entries)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("results\n%+v\nwant\n%+v", got, want)
		}
		r, err := s.Range(nil, nil, 0)
		if err != nil {
			t.Fatalf("range: %v", err)
		}
		if len(r.Entries) != len(m.data) {
			t.Fatalf("%d keys, model has %d", len(r.Entries), len(m.data))
		}
		for _, kv := range r.Entries {
			mv := m.data[string(kv.Key)]
			if kv.Version != mv.version || !bytes.Equal(kv.Value, mv.value) {
				t.Fatalf("key %q = %q v%d, model %q v%d", kv.Key, kv.Value, kv.Version, mv.value, mv.version)
			}
		}
		if s.AppliedIndex() != 5 || s.Revision() != m.rev {
			t.Fatalf("applied %d revision %d, want 5 %d", s.AppliedIndex(), s.Revision(), m.rev)
		}
	})
}

func restoreSeeds(t testing.TB) map[string][]byte {
	empty := NewMemory(Options{})
	var emptySnap bytes.Buffer
	if _, err := empty.Snapshot(&emptySnap); err != nil {
		t.Fatal(err)
	}
	sample := sampleSnapshotTB(t)
	return map[string][]byte{
		"empty-store": emptySnap.Bytes(),
		"sample":      sample,
		"truncated":   sample[:len(sample)/2],
		"no-trailer":  sample[:len(sample)-4],
		"bad-magic":   append([]byte("NOTASNAP"), sample[8:]...),
		"sessions": craft(header(10, 5), kv("a", 1), kv("b", 5),
			client(&kvpb.ClientRecord{ClientId: 2, LastIndex: 3}),
			client(&kvpb.ClientRecord{ClientId: 4, LastSeq: 1, LastIndex: 10, Result: okResult()}),
			end(2, 2)),
		"out-of-order": craft(header(5, 5), kv("b", 1), kv("a", 2), end(2, 0)),
		"bad-count":    craft(header(5, 5), kv("a", 1), end(2, 0)),
		"nothing":      {},
	}
}

func sampleSnapshotTB(t testing.TB) []byte {
	s := NewMemory(Options{})
	entries := []Entry{
		{Index: 1, Data: registerCmd()},
		{Index: 2, Data: putCmd(1, 1, "alpha", "one")},
		{Index: 3, Data: putCmd(0, 0, "beta", "")},
		{Index: 4, Data: casCmd(1, 2, "alpha", 7, "x")},
		{Index: 5, Data: registerCmd()},
		{Index: 6, Data: putCmd(5, 1, "", "bad")},
		{Index: 7, Data: delCmd(0, 0, "nothing")},
	}
	if _, err := s.Apply(entries); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := s.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzRestore feeds arbitrary bytes to Restore: it must never panic; a
// refusal must be ErrBadSnapshot and keep the old state; an acceptance
// must give a state that snapshots and restores to itself.
func FuzzRestore(f *testing.F) {
	f.Add(sampleSnapshotTB(f))
	f.Add([]byte(snapshotMagic))
	f.Fuzz(checkRestore)
}

// FuzzRestoreRecords builds snapshots whose framing and checksums are
// right but whose records are arbitrary, to reach the checks behind the
// checksums: the same properties as FuzzRestore must hold.
func FuzzRestoreRecords(f *testing.F) {
	for _, s := range recordSeeds() {
		f.Add(s.header, s.t1, s.p1, s.t2, s.p2, s.end)
	}
	f.Fuzz(func(t *testing.T, header []byte, t1 byte, p1 []byte, t2 byte, p2 []byte, end []byte) {
		checkRestore(t, craft(raw(recHeader, header), raw(t1, p1), raw(t2, p2), raw(recEnd, end)))
	})
}

// recordSeed is one FuzzRestoreRecords input.
type recordSeed struct {
	header []byte
	t1     byte
	p1     []byte
	t2     byte
	p2     []byte
	end    []byte
}

func recordSeeds() map[string]recordSeed {
	msg := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err) // a test bug: every message here is valid
		}
		return b
	}
	kv := msg(&kvpb.KeyValue{Key: []byte("a"), Value: []byte("v"), Version: 3})
	session := msg(&kvpb.ClientRecord{ClientId: 2, LastSeq: 1, LastIndex: 9, Result: okResult()})
	return map[string]recordSeed{
		"key-and-session": {msg(&kvpb.SnapshotHeader{AppliedIndex: 9, Revision: 3}), recKeyValue, kv, recClient, session, msg(&kvpb.SnapshotEnd{KeyCount: 1, ClientCount: 1})},
		"two-keys":        {msg(&kvpb.SnapshotHeader{AppliedIndex: 9, Revision: 3}), recKeyValue, kv, recKeyValue, msg(&kvpb.KeyValue{Key: []byte("b"), Version: 1}), msg(&kvpb.SnapshotEnd{KeyCount: 2})},
		"fresh-session":   {msg(&kvpb.SnapshotHeader{AppliedIndex: 1}), recClient, msg(&kvpb.ClientRecord{ClientId: 1, LastIndex: 1}), recEnd, msg(&kvpb.SnapshotEnd{ClientCount: 1}), []byte{}},
		"version-too-new": {msg(&kvpb.SnapshotHeader{AppliedIndex: 9, Revision: 2}), recKeyValue, kv, recEnd, msg(&kvpb.SnapshotEnd{KeyCount: 1}), []byte{}},
	}
}

// checkRestore is the property of every Restore fuzz target.
func checkRestore(t *testing.T, data []byte) {
	s := NewMemory(Options{})
	if _, err := s.Apply([]Entry{{Index: 1, Data: putCmd(0, 0, "keep", "me")}}); err != nil {
		t.Fatal(err)
	}
	var before bytes.Buffer
	if _, err := s.Snapshot(&before); err != nil {
		t.Fatal(err)
	}
	err := s.Restore(bytes.NewReader(data))
	var after bytes.Buffer
	info, serr := s.Snapshot(&after)
	if serr != nil {
		t.Fatalf("snapshot after restore: %v", serr)
	}
	if err != nil {
		if !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("refusal is not ErrBadSnapshot: %v", err)
		}
		if !bytes.Equal(before.Bytes(), after.Bytes()) {
			t.Fatal("a refused restore changed the state")
		}
		return
	}
	vinfo, err := VerifySnapshot(bytes.NewReader(after.Bytes()))
	if err != nil || vinfo != info {
		t.Fatalf("re-snapshot does not verify: %v (%+v vs %+v)", err, vinfo, info)
	}
	s2 := NewMemory(Options{})
	if err := s2.Restore(bytes.NewReader(after.Bytes())); err != nil {
		t.Fatalf("re-snapshot does not restore: %v", err)
	}
	var again bytes.Buffer
	if _, err := s2.Snapshot(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after.Bytes(), again.Bytes()) {
		t.Fatal("snapshot -> restore -> snapshot is not stable")
	}
}

// TestWriteFuzzCorpus regenerates the committed seed corpus. It runs only
// when asked: KVSTORE_WRITE_FUZZ_CORPUS=1 go test ./kvstore/ -run TestWriteFuzzCorpus
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("KVSTORE_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set KVSTORE_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz")
	}
	write := func(target string, seeds map[string][]any) {
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, args := range seeds {
			body := "go test fuzz v1\n"
			for _, a := range args { // the encoding of go test's corpus files
				switch v := a.(type) {
				case []byte:
					body += fmt.Sprintf("[]byte(%q)\n", v)
				case byte:
					body += fmt.Sprintf("byte(%q)\n", v)
				}
			}
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
		}
	}
	single := func(seeds map[string][]byte) map[string][]any {
		out := map[string][]any{}
		for name, data := range seeds {
			out[name] = []any{data}
		}
		return out
	}
	write("FuzzApplyCommand", single(applySeeds()))
	write("FuzzRestore", single(restoreSeeds(t)))
	records := map[string][]any{}
	for name, s := range recordSeeds() {
		records[name] = []any{s.header, s.t1, s.p1, s.t2, s.p2, s.end}
	}
	write("FuzzRestoreRecords", records)
}

// TestFuzzCorpusCommitted makes sure the seeds are there, so a plain
// `go test` replays them.
func TestFuzzCorpusCommitted(t *testing.T) {
	for target, n := range map[string]int{"FuzzApplyCommand": len(applySeeds()), "FuzzRestore": len(restoreSeeds(t)), "FuzzRestoreRecords": len(recordSeeds())} {
		entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(entries), n, target)
	}
}

// outsideModel reports whether data decodes to a command the model does
// not implement: etcd transactions, compaction, leases, genesis and auth
// changes, which TestEtcdHistoryProperty, TestLeases and the auth tests
// hold to their own models.
func outsideModel(data []byte) bool {
	var cmd kvpb.Command
	if proto.Unmarshal(data, &cmd) != nil {
		return false
	}
	switch cmd.Op.(type) {
	case *kvpb.Command_EtcdTxn, *kvpb.Command_Compact, *kvpb.Command_LeaseGrant, *kvpb.Command_LeaseRevoke,
		*kvpb.Command_Genesis, *kvpb.Command_AuthChange:
		return true
	}
	return false
}
