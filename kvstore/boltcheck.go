package kvstore

import (
	"errors"
	"fmt"
	"os"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrDamaged marks a bbolt file that cannot be used: bbolt refused it, a
// page is not what the tree pointing at it says, or its history does not
// decode or add up (OpenBolt, building the key index). The server moves
// such a file aside and rebuilds the store from the snapshot and the log.
var ErrDamaged = errors.New("kv store file is damaged")

// checkBolt reads every page reachable from the file's trees before bbolt
// is opened for writing. It must come first: opening for writing walks
// the same pages on a goroutine of bbolt's own, where a damaged page is a
// panic no caller can recover from (bbolt 1.5 checks that each page
// identifies itself as the one asked for). Here the walk is a read-only
// transaction on the calling goroutine, so a panic is caught and becomes
// ErrDamaged. A missing or empty file is not checked: bbolt creates it.
//
// The walk moves a cursor over every bucket, which touches every branch
// and leaf page (not the continuation pages of large values, whose bytes
// bbolt does not checksum). It costs about as much as the walk bbolt makes
// when it opens a file whose free list is not stored (NoFreelistSync): see
// docs/kvstore.md for the figures.
func checkBolt(path string, timeout time.Duration) (err error) {
	if st, statErr := os.Stat(path); statErr != nil || st.Size() == 0 {
		return nil // bbolt reports what it cannot open itself
	}
	db, err := openRecovering(path, &bbolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return err
	}
	defer db.Close()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: reading its pages: %v", ErrDamaged, r)
		}
	}()
	return db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return walkBucket(b) })
	})
}

// walkBucket visits every key of b and of the buckets nested in it.
func walkBucket(b *bbolt.Bucket) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			continue
		}
		child := b.Bucket(k)
		if child == nil {
			return fmt.Errorf("%w: bucket %q is listed but cannot be opened", ErrDamaged, k)
		}
		if err := walkBucket(child); err != nil {
			return err
		}
	}
	return nil
}

// openRecovering is bbolt.Open with its refusals of a damaged file, and
// any panic it raises on the calling goroutine, turned into ErrDamaged.
func openRecovering(path string, opts *bbolt.Options) (db *bbolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: bbolt panicked opening it: %v", ErrDamaged, r)
		}
	}()
	db, err = bbolt.Open(path, 0o600, opts)
	for _, damage := range []error{bolterrors.ErrInvalid, bolterrors.ErrChecksum, bolterrors.ErrVersionMismatch} {
		if errors.Is(err, damage) {
			return nil, fmt.Errorf("%w: %w", ErrDamaged, err)
		}
	}
	return db, err
}
