// Package pipemsg is what both ends of KV.Pipeline agree on about a
// message: how many calls (client to server) or replies (server to client)
// go into one. The client half of the pipeline is client/pipeline, the
// server half is in server.
package pipemsg

// MaxBytes bounds the calls or replies gathered into one message (a single
// larger one still goes alone), well under the server's request limit.
const MaxBytes = 1 << 20

// Take moves items from the front of *queue into batch, as many as fit in
// MaxBytes by size (at least one), and returns batch. The queue keeps its
// array, with no stale references behind its new end.
func Take[T any](queue *[]T, batch []T, size func(T) int) []T {
	q := *queue
	total, n := 0, 0
	for n < len(q) {
		total += size(q[n])
		if n > 0 && total > MaxBytes {
			break
		}
		n++
	}
	batch = append(batch, q[:n]...)
	rest := copy(q, q[n:])
	clear(q[rest:])
	*queue = q[:rest]
	return batch
}
