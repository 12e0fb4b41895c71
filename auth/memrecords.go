package auth

// MemRecords is Records over a map: what a model of the state machine (the
// simulator's checker, tests) keeps the records in.
type MemRecords map[string][]byte

func (m MemRecords) Get(key []byte) ([]byte, bool, error) {
	v, ok := m[string(key)]
	return v, ok, nil
}

func (m MemRecords) Put(key, value []byte) error {
	m[string(key)] = append([]byte(nil), value...)
	return nil
}

func (m MemRecords) Delete(key []byte) error {
	delete(m, string(key))
	return nil
}
