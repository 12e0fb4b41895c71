// Package backup is the format of KeyVal backup files: what `kvctl snapshot
// save` writes (through client.SaveSnapshot) and `keyvald --restore` reads.
//
// A backup file (integers big-endian):
//
//	offset  size  field
//	0       8     magic "KVBACKUP"
//	8       4     format version (1)
//	12      4     metadata length m
//	16      m     metadata: apipb.SnapshotInfo (protobuf)
//	16+m    n     data: the member's state as a kvstore snapshot stream,
//	              n = metadata.size bytes
//	16+m+n  32    SHA-256 of every byte before it
//
// The checksum covers the whole file, so damage anywhere is found before a
// restore uses any of it; the data also carries kvstore's own record
// checksums, which the restore checks as it loads.
package backup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

const (
	magic         = "KVBACKUP"
	formatVersion = 1
	headerSize    = 16
	// SumSize is the length of the trailing checksum.
	SumSize = sha256.Size
	// maxMeta bounds the metadata a reader accepts, so a damaged length
	// cannot make it allocate much.
	maxMeta = 1 << 20
)

// ErrCorrupt is wrapped by every refusal of a file that is damaged,
// truncated, or not a backup.
var ErrCorrupt = errors.New("backup file is damaged or not a KeyVal backup")

// Sum is a backup file's checksum.
type Sum [SumSize]byte

func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// WriteFile writes a backup to path atomically: a temporary file in the
// same directory, fsync, rename over path, fsync of the directory. data
// must yield exactly info.Size bytes and then io.EOF; any error it returns
// abandons the file (nothing is left at path or beside it). It returns the
// file's checksum and size.
func WriteFile(path string, info *apipb.SnapshotInfo, data io.Reader) (Sum, int64, error) {
	head, err := Header(info)
	if err != nil {
		return Sum{}, 0, err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return Sum{}, 0, fmt.Errorf("backup: create a temporary file beside %s: %w", path, err)
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	if _, err := w.Write(head); err != nil {
		return Sum{}, 0, fmt.Errorf("backup: write %s: %w", f.Name(), err)
	}
	n, err := io.Copy(w, data)
	if err != nil {
		return Sum{}, 0, fmt.Errorf("backup: %w", err)
	}
	if uint64(n) != info.Size {
		return Sum{}, 0, fmt.Errorf("backup: got %d bytes of data, the metadata says %d", n, info.Size)
	}
	var sum Sum
	h.Sum(sum[:0])
	if _, err := f.Write(sum[:]); err != nil {
		return Sum{}, 0, fmt.Errorf("backup: write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return Sum{}, 0, fmt.Errorf("backup: sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return Sum{}, 0, fmt.Errorf("backup: close %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return Sum{}, 0, fmt.Errorf("backup: %w", err)
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return Sum{}, 0, fmt.Errorf("backup: sync directory %s: %w", dir, err)
	}
	return sum, int64(len(head)) + n + SumSize, nil
}

// Header is what a backup file holds before its data: the fixed header
// and the metadata. A file is Header, then info.Size bytes of data, then
// the SHA-256 of all of it; a server streaming a whole file (etcd's
// Snapshot) sends these bytes first.
func Header(info *apipb.SnapshotInfo) ([]byte, error) {
	meta, err := proto.MarshalOptions{Deterministic: true}.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("backup: encode metadata: %w", err)
	}
	head := make([]byte, headerSize, headerSize+len(meta))
	copy(head, magic)
	binary.BigEndian.PutUint32(head[8:], formatVersion)
	binary.BigEndian.PutUint32(head[12:], uint32(len(meta)))
	return append(head, meta...), nil
}

// PadTo sets info.Padding so that the bytes of the file before its
// checksum (Header and info.Size bytes of data) are a multiple of align.
// etcd's snapshot tools take a file for one with a checksum only when its
// length is a multiple of 512 plus the 32 bytes of a SHA-256.
func PadTo(info *apipb.SnapshotInfo, align int) {
	info.Padding = nil
	// The padding's own length prefix grows with it, so search rather
	// than compute: at most align tries of a small message.
	for n := 0; n <= align+2*binary.MaxVarintLen64; n++ {
		if n > 0 {
			info.Padding = make([]byte, n)
		}
		if (headerSize+proto.Size(info)+int(info.Size%uint64(align)))%align == 0 {
			return
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// File is an open backup whose checksum has been verified.
type File struct {
	// Info is the metadata the member recorded.
	Info *apipb.SnapshotInfo
	// Sum is the file's checksum (verified), and Size its length in bytes.
	Sum  Sum
	Size int64
	Path string

	f    *os.File
	data *io.SectionReader
}

// Open opens the backup at path and verifies it: format, metadata and the
// SHA-256 of the whole file (reading it once). An error wrapping
// ErrCorrupt says the file must not be restored from.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	b, err := verify(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

func corruptf(path, format string, args ...any) error {
	return fmt.Errorf("backup %s: %w: %s", path, ErrCorrupt, fmt.Sprintf(format, args...))
}

func verify(f *os.File, path string) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	size := st.Size()
	if size < headerSize+SumSize {
		return nil, corruptf(path, "%d bytes is too short for a backup", size)
	}
	var hdr [headerSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", path, err)
	}
	if string(hdr[:8]) != magic {
		return nil, corruptf(path, "it does not start with %q", magic)
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != formatVersion {
		return nil, corruptf(path, "format version %d; this build reads version %d", v, formatVersion)
	}
	// The checksum first: nothing else in the file is trusted before it.
	var want Sum
	if _, err := f.ReadAt(want[:], size-SumSize); err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", path, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size-SumSize)); err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", path, err)
	}
	var got Sum
	h.Sum(got[:0])
	if got != want {
		return nil, corruptf(path, "its SHA-256 is %s but it records %s: the file was changed or cut short after it was written", got, want)
	}
	metaLen := int64(binary.BigEndian.Uint32(hdr[12:]))
	if metaLen > maxMeta || headerSize+metaLen+SumSize > size {
		return nil, corruptf(path, "metadata length %d impossible in a file of %d bytes", metaLen, size)
	}
	meta := make([]byte, metaLen)
	if _, err := f.ReadAt(meta, headerSize); err != nil {
		return nil, fmt.Errorf("backup: read %s: %w", path, err)
	}
	info := &apipb.SnapshotInfo{}
	if err := proto.Unmarshal(meta, info); err != nil {
		return nil, corruptf(path, "metadata does not decode: %v", err)
	}
	dataOff := headerSize + metaLen
	dataLen := size - SumSize - dataOff
	if info.Size != uint64(dataLen) {
		return nil, corruptf(path, "metadata says %d bytes of data, the file holds %d", info.Size, dataLen)
	}
	return &File{Info: info, Sum: got, Size: size, Path: path, f: f, data: io.NewSectionReader(f, dataOff, dataLen)}, nil
}

// Data returns a reader of the data from its start (a kvstore snapshot
// stream). Each call starts again at the beginning.
func (b *File) Data() io.Reader { return io.NewSectionReader(b.data, 0, b.data.Size()) }

// Close closes the file.
func (b *File) Close() error { return b.f.Close() }

// Summary is one line about a backup, for logs and messages.
func (b *File) Summary() string {
	return fmt.Sprintf("index %d, revision %d, %d keys, %d bytes, sha256 %s",
		b.Info.AppliedIndex, b.Info.Revision, b.Info.KeyCount, b.Size, b.Sum)
}
