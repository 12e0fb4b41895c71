package disk

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// streamChunk is how much a stream file gathers before one direct write;
// streamAlign is the alignment direct I/O asks of the buffer, the offset
// and the length (the largest logical block size in use).
const (
	streamChunk = 1 << 20
	streamAlign = 4096
)

// CreateStream implements StreamFS. The file is opened for direct I/O
// (O_DIRECT): its data goes from the process's buffer to the disk without
// a copy into the page cache. A snapshot is written once, front to back,
// and read back rarely (to send it, or at a restart); under load the copy
// into the page cache cost a member more CPU than encoding the snapshot
// (docs/bench.md). A file system that refuses direct I/O (tmpfs before
// Linux 6.6) gets a plain file.
func (OSFS) CreateStream(name string) (File, error) {
	f, err := createFile(name, unix.O_DIRECT)
	if errors.Is(err, unix.EINVAL) {
		return OSFS{}.Create(name)
	}
	if err != nil {
		return nil, err
	}
	raw := make([]byte, streamChunk+streamAlign)
	skip := (streamAlign - int(uintptr(unsafe.Pointer(&raw[0]))%streamAlign)) % streamAlign
	return &streamFile{osFile: osFile{f: f}, buf: raw[skip : skip : skip+streamChunk], direct: true}, nil
}

// streamFile gathers sequential writes into aligned chunks written with
// direct I/O. Anything else — a write elsewhere than at the end, a read, a
// Sync, a Truncate, a Size, a Close — first turns direct I/O off and
// writes out what is gathered with a plain write, so the file then behaves
// as any other.
type streamFile struct {
	osFile
	buf    []byte // gathered, to be written at off
	off    int64
	direct bool
}

func (s *streamFile) WriteAt(p []byte, off int64) (int, error) {
	if !s.direct || off != s.off+int64(len(s.buf)) {
		if err := s.plain(); err != nil {
			return 0, err
		}
		return s.osFile.WriteAt(p, off)
	}
	n := len(p)
	for len(p) > 0 {
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf, p = s.buf[:len(s.buf)+k], p[k:]
		if len(s.buf) < cap(s.buf) {
			continue
		}
		at := s.off + int64(len(s.buf))
		if err := s.writeChunk(); err != nil {
			// What of p is still gathered was not written; the chunk may
			// hold more of it than this call brought.
			return max(0, n-len(p)-len(s.buf)), err
		}
		if !s.direct { // refused: the rest goes plainly
			k, err := s.osFile.WriteAt(p, at)
			return n - len(p) + k, err
		}
	}
	return n, nil
}

// writeChunk writes the full gathered chunk. A file system that opened
// the file for direct I/O but refuses the write (EINVAL: an alignment it
// wants larger) gets it written plainly, and the file stays plain.
func (s *streamFile) writeChunk() error {
	_, err := s.f.WriteAt(s.buf, s.off)
	if errors.Is(err, unix.EINVAL) {
		return s.plain()
	}
	if err != nil {
		return fmt.Errorf("direct write at %d: %w", s.off, err)
	}
	s.off += int64(len(s.buf))
	s.buf = s.buf[:0]
	return nil
}

// plain turns direct I/O off and writes out what was gathered. Each part
// is marked done only once it succeeded, so that after a failure the next
// call tries it again: a later Sync must not report a tail it never wrote.
func (s *streamFile) plain() error {
	if s.direct {
		raw, err := s.f.SyscallConn()
		if err != nil {
			return fmt.Errorf("end direct I/O on %s: %w", s.f.Name(), err)
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			var fl int
			if fl, serr = unix.FcntlInt(fd, unix.F_GETFL, 0); serr == nil {
				_, serr = unix.FcntlInt(fd, unix.F_SETFL, fl&^unix.O_DIRECT)
			}
		}); err != nil || serr != nil {
			return fmt.Errorf("end direct I/O on %s: %w", s.f.Name(), errors.Join(err, serr))
		}
		s.direct = false
	}
	if len(s.buf) > 0 {
		if _, err := s.f.WriteAt(s.buf, s.off); err != nil {
			return fmt.Errorf("write at %d: %w", s.off, err)
		}
	}
	s.buf = nil
	return nil
}

func (s *streamFile) ReadAt(p []byte, off int64) (int, error) {
	if err := s.plain(); err != nil {
		return 0, err
	}
	return s.osFile.ReadAt(p, off)
}

func (s *streamFile) Truncate(size int64) error {
	if err := s.plain(); err != nil {
		return err
	}
	return s.osFile.Truncate(size)
}

func (s *streamFile) Sync() error {
	if err := s.plain(); err != nil {
		return err
	}
	return s.osFile.Sync()
}

func (s *streamFile) Size() (int64, error) {
	if err := s.plain(); err != nil {
		return 0, err
	}
	return s.osFile.Size()
}

func (s *streamFile) Close() error {
	err := s.plain()
	return errors.Join(err, s.osFile.Close())
}
