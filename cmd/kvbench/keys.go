package main

// formatKey writes n into key as zero-padded decimal filling the whole
// slice, in place: the workers reuse one key buffer each, so producing a key
// allocates nothing. Digits that do not fit are dropped from the left (the
// configuration check makes sure the key space fits).
func formatKey(key []byte, n uint64) {
	for i := len(key) - 1; i >= 0; i-- {
		key[i] = '0' + byte(n%10)
		n /= 10
	}
}

// makeValue returns the value every write sends: size bytes of printable
// text, so that a person listing the keys sees something readable. All
// workers share it; the client only reads it.
func makeValue(size int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	v := make([]byte, size)
	for i := range v {
		v[i] = alphabet[i%len(alphabet)]
	}
	return v
}
