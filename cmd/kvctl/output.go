package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

// JSON output. Field names are stable: scripts may rely on them. Keys and
// values that are valid UTF-8 appear as strings; others appear base64
// encoded under the same name with a _base64 suffix instead.

type putJSON struct {
	Key      string `json:"key"`
	Version  uint64 `json:"version"`
	Existed  bool   `json:"existed"`
	Revision uint64 `json:"revision"`
}

type getJSON struct {
	Key         string  `json:"key"`
	Found       bool    `json:"found"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	Version     uint64  `json:"version"`
	Revision    uint64  `json:"revision"`
}

type deleteJSON struct {
	Key      string `json:"key"`
	Existed  bool   `json:"existed"`
	Revision uint64 `json:"revision"`
}

type casJSON struct {
	Key       string `json:"key"`
	Succeeded bool   `json:"succeeded"`
	// Version: the new version on success, the current one on failure.
	Version            uint64  `json:"version"`
	Exists             *bool   `json:"exists,omitempty"`
	CurrentValue       *string `json:"current_value,omitempty"`
	CurrentValueBase64 string  `json:"current_value_base64,omitempty"`
	Revision           uint64  `json:"revision"`
}

type kvJSON struct {
	Key         *string `json:"key,omitempty"`
	KeyBase64   string  `json:"key_base64,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	Version     uint64  `json:"version"`
}

type listJSON struct {
	Prefix   string   `json:"prefix"`
	KVs      []kvJSON `json:"kvs"`
	More     bool     `json:"more"`
	Revision uint64   `json:"revision"`
}

type memberJSON struct {
	Endpoint  string `json:"endpoint"`
	Reachable bool   `json:"reachable"`
	ID        uint64 `json:"id"`
	Role      string `json:"role"`
	Term      uint64 `json:"term"`
	Commit    uint64 `json:"commit"`
	Applied   uint64 `json:"applied"`
	LeaderID  uint64 `json:"leader_id"`
	Error     string `json:"error,omitempty"`
}

type statusJSON struct {
	Members []memberJSON `json:"members"`
}

func (a *app) writeJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return &exitError{code: exitFailed, msg: fmt.Sprintf("writing output: %v", err)}
	}
	return nil
}

// textOrBase64 returns b as a string if it is valid UTF-8, else base64.
func textOrBase64(b []byte) (*string, string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, ""
	}
	return nil, base64.StdEncoding.EncodeToString(b)
}

func toKVJSON(kv client.KeyValue) kvJSON {
	out := kvJSON{Version: kv.Version}
	out.Key, out.KeyBase64 = textOrBase64(kv.Key)
	out.Value, out.ValueBase64 = textOrBase64(kv.Value)
	return out
}

func toMemberJSON(st client.NodeStatus) memberJSON {
	if st.Err != nil {
		return memberJSON{Endpoint: st.Endpoint, Role: "unreachable", Error: describe(st.Err)}
	}
	return memberJSON{
		Endpoint: st.Endpoint, Reachable: true, ID: st.ID, Role: strings.ToLower(st.Role),
		Term: st.Term, Commit: st.Commit, Applied: st.Applied, LeaderID: st.LeaderID,
	}
}

// tableCellMax is how many characters of a value a table shows.
const tableCellMax = 64

// displayText shows bytes in a table cell: as they are when printable,
// quoted Go-style otherwise (so tabs, newlines and binary cannot break the
// table), shortened to tableCellMax.
func displayText(b []byte) string {
	s := string(b)
	printable := utf8.ValidString(s)
	for _, r := range s {
		if !printable {
			break
		}
		printable = unicode.IsPrint(r)
	}
	if !printable || s == "" {
		s = strconv.Quote(s)
	}
	if utf8.RuneCountInString(s) > tableCellMax {
		s = string([]rune(s)[:tableCellMax-1]) + "…"
	}
	return s
}

func (a *app) writeListTable(kvs []client.KeyValue) {
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "KEY\tVERSION\tVALUE")
	for _, kv := range kvs {
		fmt.Fprintf(w, "%s\t%d\t%s\n", displayText(kv.Key), kv.Version, displayText(kv.Value))
	}
	_ = w.Flush()
}

func (a *app) writeStatusTable(all []client.NodeStatus) {
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tADDRESS\tROLE\tTERM\tCOMMIT\tAPPLIED\tLEADER")
	for _, st := range all {
		if st.Err != nil {
			fmt.Fprintf(w, "-\t%s\tunreachable\t-\t-\t-\t-\n", st.Endpoint)
			continue
		}
		leader := "none"
		if st.LeaderID != 0 {
			leader = strconv.FormatUint(st.LeaderID, 10)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%d\t%s\n",
			st.ID, st.Endpoint, strings.ToLower(st.Role), st.Term, st.Commit, st.Applied, leader)
	}
	_ = w.Flush()
}
