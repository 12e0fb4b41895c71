package disk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Op names an FS operation, for MemFS's latency and interception hooks.
type Op uint8

// The operations MemFS reports.
const (
	OpCreate Op = iota + 1
	OpOpen
	OpRename
	OpRemove
	OpReadDir
	OpMkdirAll
	OpSyncDir
	OpReadAt
	OpWriteAt
	OpSync
	OpTruncate
	OpSize
	OpClose
)

var opNames = [...]string{
	OpCreate: "create", OpOpen: "open", OpRename: "rename", OpRemove: "remove",
	OpReadDir: "readdir", OpMkdirAll: "mkdirall", OpSyncDir: "syncdir",
	OpReadAt: "read", OpWriteAt: "write", OpSync: "sync", OpTruncate: "truncate",
	OpSize: "size", OpClose: "close",
}

func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Mutates reports whether the operation changes what is stored (or makes it
// durable): the points at which a crash test wants to pull the plug.
func (o Op) Mutates() bool {
	switch o {
	case OpCreate, OpRename, OpRemove, OpMkdirAll, OpSyncDir, OpWriteAt, OpSync, OpTruncate:
		return true
	}
	return false
}

// ErrCrashed is returned by a MemFS file handle opened before the last Crash.
var ErrCrashed = errors.New("disk: file handle from before a crash")

// IsInjectedError reports whether err is one of the errors MemFS's Faults
// inject: a read error (EIO) or a full disk (ENOSPC). A simulator tells
// these from errors its code under test made up.
func IsInjectedError(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ENOSPC)
}

// MemFaults are MemFS's fault knobs. Each is independent, so a simulator can
// switch every one on or off per seed. The zero value injects nothing: a
// crash then loses exactly the unsynced changes.
type MemFaults struct {
	// PartialFlush: on Crash, a random prefix (in write order) of each file's
	// unsynced changes, and of each directory's unsynced entry changes,
	// survives instead of none of them.
	PartialFlush bool
	// TornWrites: on Crash, the first unsynced write that does not survive
	// whole may survive in part: a random prefix of it lands, and the file
	// may have grown to the write's full length with zeros past that prefix
	// (the size was updated, the data never arrived).
	TornWrites bool

	// BitFlipProb is the probability that a write is stored with one random
	// bit flipped.
	BitFlipProb float64
	// MisdirectProb is the probability that a write lands at a different,
	// random offset of the same file (and the target range is left alone).
	MisdirectProb float64
	// ReadErrorProb is the probability that a read fails with EIO.
	ReadErrorProb float64
	// LostWriteProb is the probability that a synced write never reaches
	// the platter, though Sync reported success: after a crash its bytes
	// read as zeros. Modelled only where something the file holds durably
	// lies past it (a later write was synced), unless LoseLastWrite.
	LostWriteProb float64
	// LoseLastWrite makes half the crashes lose, instead of the writes
	// LostWriteProb chose, one file's last synced write (the newest write
	// synced since the previous crash, if nothing lies past it): the file
	// ends where the write began, or keeps its size with the write's bytes
	// zeroed. Such a crash loses no other write: a node detects its WAL's
	// lost last write with a second, later write elsewhere (the WAL end
	// mark), and two lost writes in one crash can hide each other.
	LoseLastWrite bool

	// CapacityBytes, if positive, is the total size the files may reach;
	// a write past it stores what fits and fails with ENOSPC.
	CapacityBytes int64

	// Latency, if set, returns the simulated duration of each operation
	// (n is the byte count of reads and writes). MemFS adds it up for the
	// simulator to charge to its virtual clock; see TakeElapsed. Nothing
	// sleeps.
	Latency func(op Op, name string, n int) time.Duration
}

// MemFS is an in-memory FS whose faults a test or the deterministic simulator
// controls. It is meant for a single goroutine: it takes no locks, reads no
// clock, and draws randomness only from the *rand.Rand handed to NewMemFS, in
// an order that depends only on the calls made (never on map iteration).
//
// Directories come into existence durably with MkdirAll; files and directory
// entries obey the durability rules of FS and are subject to the Faults.
type MemFS struct {
	// Faults are the knobs; change them at any time.
	Faults MemFaults
	// Intercept, if set, runs before every operation (after a file handle's
	// own checks). Returning an error fails the operation with that error
	// before it has any effect. Crash tests use it to crash at the n-th write.
	Intercept func(op Op, name string) error

	injected MemFaultCounts

	rng     *rand.Rand
	dirs    map[string]*memDir
	epoch   uint64 // bumped by Crash; older handles are dead
	elapsed time.Duration
	// During a crash: the writes it may show lost (loseWrites).
	lostWrites, lastWrites []lostWrite
}

var _ FS = (*MemFS)(nil)

// MemFaultCounts counts the faults a MemFS actually injected, so a test or
// the simulator can report what a run went through.
type MemFaultCounts struct {
	Crashes           int
	TornWrites        int // writes a crash left partly on disk
	FlippedWrites     int // writes stored with a flipped bit
	MisdirectedWrites int
	ReadErrors        int // reads failed by ReadErrorProb or SetReadError
	NoSpace           int // writes refused or cut short by CapacityBytes
	LostWrites        int // synced writes a crash showed never reached the platter
}

// Injected returns the faults injected so far.
func (m *MemFS) Injected() MemFaultCounts { return m.injected }

type memDir struct {
	names   map[string]*memInode // what the directory lists now
	durable map[string]*memInode // what it lists after a crash
	pending []dirChange          // unsynced changes, oldest first
}

// dirChange is one atomic change to a directory: a create, a remove, or a
// rename within the directory (two names at once).
type dirChange []nameChange

type nameChange struct {
	name string
	ino  *memInode // nil removes the name
}

type memInode struct {
	data     []byte       // current contents
	durable  []byte       // contents after a crash
	pending  []fileChange // unsynced changes, oldest first
	badReads [][2]int64   // [off, end) ranges whose reads fail with EIO
	// spill holds the bytes of the unsynced writes (pending's data points
	// into it), reused after each sync rather than a copy allocated per
	// write.
	spill []byte
	// lost are the [off, end) ranges of synced writes that never reached
	// the platter (LostWriteProb); a crash zeroes them.
	lost [][2]int64
	// lastSynced is the [off, end) range of the newest write synced since
	// the last crash, which a crash may lose (LoseLastWrite); empty if none.
	lastSynced [2]int64
}

// fileChange is an unsynced write (data at off) or truncate (to size).
type fileChange struct {
	truncate bool
	off      int64
	data     []byte
	size     int64
}

// sync makes every pending change durable.
func (ino *memInode) sync() {
	for _, c := range ino.pending {
		ino.durable = c.applyTo(ino.durable)
	}
	ino.dropPending()
}

// dropPending forgets the pending changes and keeps their arrays for the
// next ones: nothing refers to a change's data once it is gone.
func (ino *memInode) dropPending() {
	clear(ino.pending)
	ino.pending, ino.spill = ino.pending[:0], ino.spill[:0]
}

func (c fileChange) applyTo(b []byte) []byte {
	if c.truncate {
		return resize(b, c.size)
	}
	end := c.off + int64(len(c.data))
	if end > int64(len(b)) {
		b = resize(b, end)
	}
	copy(b[c.off:], c.data)
	return b
}

// resize returns b grown with zeros or cut to size.
func resize(b []byte, size int64) []byte {
	if size <= int64(len(b)) {
		return b[:size]
	}
	if size <= int64(cap(b)) {
		old := len(b)
		b = b[:size]
		clear(b[old:])
		return b
	}
	nb := make([]byte, size, max(size, 2*int64(cap(b))))
	copy(nb, b)
	return nb
}

// NewMemFS returns an empty in-memory FS that draws its fault randomness
// from rng. The roots "/" and "." exist.
func NewMemFS(rng *rand.Rand) *MemFS {
	if rng == nil {
		rng = rand.New(rand.NewPCG(0, 0))
	}
	m := &MemFS{rng: rng, dirs: map[string]*memDir{}}
	m.dirs["/"] = newMemDir()
	m.dirs["."] = newMemDir()
	return m
}

func newMemDir() *memDir {
	return &memDir{names: map[string]*memInode{}, durable: map[string]*memInode{}}
}

// TakeElapsed returns the simulated time the operations since the last call
// took (as reported by Faults.Latency) and resets the count.
func (m *MemFS) TakeElapsed() time.Duration {
	d := m.elapsed
	m.elapsed = 0
	return d
}

// begin runs the hooks common to every operation.
func (m *MemFS) begin(op Op, name string, n int) error {
	if m.Intercept != nil {
		if err := m.Intercept(op, name); err != nil {
			return err
		}
	}
	if m.Faults.Latency != nil {
		m.elapsed += m.Faults.Latency(op, name, n)
	}
	return nil
}

func (m *MemFS) chance(p float64) bool {
	return p > 0 && m.rng.Float64() < p
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// lookup finds the directory holding name and name's base.
func (m *MemFS) parent(op, name string) (*memDir, string, error) {
	clean := filepath.Clean(name)
	d := m.dirs[filepath.Dir(clean)]
	if d == nil {
		return nil, "", pathErr(op, name, fs.ErrNotExist)
	}
	return d, filepath.Base(clean), nil
}

func (m *MemFS) isDir(name string) bool {
	_, ok := m.dirs[filepath.Clean(name)]
	return ok
}

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) {
	if err := m.begin(OpCreate, name, 0); err != nil {
		return nil, err
	}
	d, base, err := m.parent("create", name)
	if err != nil {
		return nil, err
	}
	if m.isDir(name) {
		return nil, pathErr("create", name, syscall.EISDIR)
	}
	ino := d.names[base]
	if ino != nil {
		ino.truncate(0)
	} else {
		ino = &memInode{}
		d.names[base] = ino
		d.pending = append(d.pending, dirChange{{base, ino}})
	}
	return m.handle(name, ino), nil
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) {
	if err := m.begin(OpOpen, name, 0); err != nil {
		return nil, err
	}
	d, base, err := m.parent("open", name)
	if err != nil {
		return nil, err
	}
	ino := d.names[base]
	if ino == nil {
		if m.isDir(name) {
			return nil, pathErr("open", name, syscall.EISDIR)
		}
		return nil, pathErr("open", name, fs.ErrNotExist)
	}
	return m.handle(name, ino), nil
}

func (m *MemFS) handle(name string, ino *memInode) *memFile {
	return &memFile{fs: m, ino: ino, name: name, epoch: m.epoch}
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	if err := m.begin(OpRename, oldname, 0); err != nil {
		return err
	}
	od, obase, err := m.parent("rename", oldname)
	if err != nil {
		return err
	}
	ino := od.names[obase]
	if ino == nil {
		return pathErr("rename", oldname, fs.ErrNotExist)
	}
	nd, nbase, err := m.parent("rename", newname)
	if err != nil {
		return err
	}
	if m.isDir(newname) {
		return pathErr("rename", newname, syscall.EISDIR)
	}
	if od == nd && obase == nbase {
		return nil
	}
	delete(od.names, obase)
	nd.names[nbase] = ino
	if od == nd {
		od.pending = append(od.pending, dirChange{{nbase, ino}, {obase, nil}})
	} else {
		// Across directories the two halves become durable separately.
		nd.pending = append(nd.pending, dirChange{{nbase, ino}})
		od.pending = append(od.pending, dirChange{{obase, nil}})
	}
	return nil
}

// Remove implements FS. It removes a file, or an empty directory.
func (m *MemFS) Remove(name string) error {
	if err := m.begin(OpRemove, name, 0); err != nil {
		return err
	}
	d, base, err := m.parent("remove", name)
	if err != nil {
		return err
	}
	if d.names[base] == nil {
		clean := filepath.Clean(name)
		sub := m.dirs[clean]
		if sub == nil {
			return pathErr("remove", name, fs.ErrNotExist)
		}
		if len(sub.names) > 0 || len(m.subdirs(clean)) > 0 || filepath.Dir(clean) == clean {
			return pathErr("remove", name, syscall.ENOTEMPTY)
		}
		delete(m.dirs, clean)
		return nil
	}
	delete(d.names, base)
	d.pending = append(d.pending, dirChange{{base, nil}})
	return nil
}

func (m *MemFS) subdirs(dir string) []string {
	var names []string
	for p := range m.dirs {
		if p != dir && filepath.Dir(p) == dir {
			names = append(names, filepath.Base(p))
		}
	}
	return names
}

// ReadDir implements FS: the files and subdirectories of dir, sorted.
func (m *MemFS) ReadDir(dir string) ([]string, error) {
	if err := m.begin(OpReadDir, dir, 0); err != nil {
		return nil, err
	}
	clean := filepath.Clean(dir)
	d := m.dirs[clean]
	if d == nil {
		return nil, pathErr("readdir", dir, fs.ErrNotExist)
	}
	names := m.subdirs(clean)
	for n := range d.names {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// MkdirAll implements FS. New directories are durable at once.
func (m *MemFS) MkdirAll(dir string) error {
	if err := m.begin(OpMkdirAll, dir, 0); err != nil {
		return err
	}
	return m.mkdirAll(filepath.Clean(dir))
}

func (m *MemFS) mkdirAll(clean string) error {
	if m.dirs[clean] != nil {
		return nil
	}
	parent := filepath.Dir(clean)
	if err := m.mkdirAll(parent); err != nil {
		return err
	}
	if m.dirs[parent].names[filepath.Base(clean)] != nil {
		return pathErr("mkdir", clean, syscall.ENOTDIR)
	}
	m.dirs[clean] = newMemDir()
	return nil
}

// SyncDir implements FS.
func (m *MemFS) SyncDir(dir string) error {
	if err := m.begin(OpSyncDir, dir, 0); err != nil {
		return err
	}
	d := m.dirs[filepath.Clean(dir)]
	if d == nil {
		return pathErr("syncdir", dir, fs.ErrNotExist)
	}
	for _, c := range d.pending {
		c.applyTo(d.durable)
	}
	d.pending = nil
	return nil
}

func (c dirChange) applyTo(names map[string]*memInode) {
	for _, nc := range c {
		if nc.ino == nil {
			delete(names, nc.name)
		} else {
			names[nc.name] = nc.ino
		}
	}
}

// Crash simulates a power failure: every open handle dies, and each file and
// directory reverts to its durable state plus whatever of its unsynced
// changes the Faults let survive.
func (m *MemFS) Crash() {
	m.epoch++
	m.injected.Crashes++
	dirPaths := make([]string, 0, len(m.dirs))
	for p := range m.dirs {
		dirPaths = append(dirPaths, p)
	}
	slices.Sort(dirPaths) // fixed order: the rng draws must be reproducible
	for _, p := range dirPaths {
		d := m.dirs[p]
		keep := m.survivors(len(d.pending))
		for _, c := range d.pending[:keep] {
			c.applyTo(d.durable)
		}
		d.pending = nil
		d.names = make(map[string]*memInode, len(d.durable))
		for n, ino := range d.durable {
			d.names[n] = ino
		}
	}
	seen := map[*memInode]bool{}
	for _, p := range dirPaths {
		d := m.dirs[p]
		names := make([]string, 0, len(d.names))
		for n := range d.names {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			if ino := d.names[n]; !seen[ino] {
				seen[ino] = true
				m.crashFile(ino)
			}
		}
	}
	m.loseWrites()
}

// survivors is how many of n unsynced changes survive a crash.
func (m *MemFS) survivors(n int) int {
	if !m.Faults.PartialFlush || n == 0 {
		return 0
	}
	return m.rng.IntN(n + 1)
}

func (m *MemFS) crashFile(ino *memInode) {
	keep := m.survivors(len(ino.pending))
	for _, c := range ino.pending[:keep] {
		ino.durable = c.applyTo(ino.durable)
	}
	if m.Faults.TornWrites && keep < len(ino.pending) {
		if c := ino.pending[keep]; !c.truncate && len(c.data) > 0 {
			cut := m.rng.IntN(len(c.data))
			m.injected.TornWrites++
			ino.durable = fileChange{off: c.off, data: c.data[:cut]}.applyTo(ino.durable)
			if end := c.off + int64(len(c.data)); m.rng.IntN(2) == 0 && end > int64(len(ino.durable)) {
				ino.durable = resize(ino.durable, end)
			}
		}
	}
	ino.dropPending()
	for _, l := range ino.lost {
		if int64(len(ino.durable)) > l[1] {
			m.lostWrites = append(m.lostWrites, lostWrite{ino, l[0], l[1]})
		}
	}
	if l := ino.lastSynced; m.Faults.LoseLastWrite && l[0] < l[1] && l[1] >= int64(len(ino.durable)) && l[0] < int64(len(ino.durable)) {
		m.lastWrites = append(m.lastWrites, lostWrite{ino, l[0], int64(len(ino.durable))})
	}
	ino.lost, ino.lastSynced = ino.lost[:0], [2]int64{}
	ino.data = slices.Clone(ino.durable)
}

// lostWrite is a synced write [off, end) of a file that a crash may show
// never reached the platter.
type lostWrite struct {
	ino      *memInode
	off, end int64
}

// loseWrites makes the crash lose what crashFile found lost: the synced
// writes with durable data past them, zeroed; or, in half the crashes with
// Faults.LoseLastWrite, instead the last synced write of one file (picked
// from those that have one at their end). Not both: two lost writes in one
// crash can hide each other (a WAL's lost last write and the later write
// elsewhere that would show it), and the model keeps to one there.
func (m *MemFS) loseWrites() {
	defer func() { m.lostWrites, m.lastWrites = m.lostWrites[:0], m.lastWrites[:0] }()
	if len(m.lastWrites) > 0 && m.rng.IntN(2) == 0 {
		l := m.lastWrites[m.rng.IntN(len(m.lastWrites))]
		if m.rng.IntN(2) == 0 {
			l.ino.durable = l.ino.durable[:l.off]
		} else {
			clear(l.ino.durable[l.off:])
		}
		l.ino.data = slices.Clone(l.ino.durable)
		m.injected.LostWrites++
		return
	}
	for _, l := range m.lostWrites {
		clear(l.ino.durable[l.off:l.end])
		l.ino.data = slices.Clone(l.ino.durable)
		m.injected.LostWrites++
	}
}

// lookupFile finds a file's inode for the fault-injection methods.
func (m *MemFS) lookupFile(name string) (*memInode, error) {
	d, base, err := m.parent("lookup", name)
	if err != nil {
		return nil, err
	}
	ino := d.names[base]
	if ino == nil {
		return nil, pathErr("lookup", name, fs.ErrNotExist)
	}
	return ino, nil
}

// FlipBit flips one stored bit of a file, durably: the byte at off reads
// differently now and after any crash. bit is taken modulo 8.
func (m *MemFS) FlipBit(name string, off int64, bit uint) error {
	ino, err := m.lookupFile(name)
	if err != nil {
		return err
	}
	if off < 0 || off >= int64(len(ino.data)) {
		return fmt.Errorf("flip bit of %s: offset %d outside file of %d bytes", name, off, len(ino.data))
	}
	mask := byte(1) << (bit % 8)
	ino.data[off] ^= mask
	if off < int64(len(ino.durable)) {
		ino.durable[off] ^= mask
	}
	for _, c := range ino.pending {
		if !c.truncate && off >= c.off && off < c.off+int64(len(c.data)) {
			c.data[off-c.off] ^= mask
		}
	}
	return nil
}

// FlipRandomBit flips a random bit of a non-empty file (see FlipBit) and
// returns its offset.
func (m *MemFS) FlipRandomBit(name string) (int64, error) {
	ino, err := m.lookupFile(name)
	if err != nil {
		return 0, err
	}
	if len(ino.data) == 0 {
		return 0, fmt.Errorf("flip bit of %s: file is empty", name)
	}
	off := m.rng.Int64N(int64(len(ino.data)))
	return off, m.FlipBit(name, off, m.rng.UintN(8))
}

// SetReadError makes reads of name that touch [off, off+n) fail with EIO
// until ClearReadErrors. The fault follows the file through renames.
func (m *MemFS) SetReadError(name string, off, n int64) error {
	ino, err := m.lookupFile(name)
	if err != nil {
		return err
	}
	ino.badReads = append(ino.badReads, [2]int64{off, off + n})
	return nil
}

// ClearReadErrors removes the read faults SetReadError put on name.
func (m *MemFS) ClearReadErrors(name string) error {
	ino, err := m.lookupFile(name)
	if err != nil {
		return err
	}
	ino.badReads = nil
	return nil
}

// used is the total size of the files the namespace lists.
func (m *MemFS) used() int64 {
	seen := map[*memInode]bool{}
	var total int64
	for _, d := range m.dirs { // a sum: iteration order does not matter
		for _, ino := range d.names {
			if !seen[ino] {
				seen[ino] = true
				total += int64(len(ino.data))
			}
		}
	}
	return total
}

func (ino *memInode) truncate(size int64) {
	ino.data = resize(ino.data, size)
	ino.pending = append(ino.pending, fileChange{truncate: true, size: size})
}

type memFile struct {
	fs     *MemFS
	ino    *memInode
	name   string
	epoch  uint64
	closed bool
}

func (f *memFile) check(op Op, n int) error {
	if f.closed {
		return pathErr(op.String(), f.name, ErrClosed)
	}
	if f.epoch != f.fs.epoch {
		return pathErr(op.String(), f.name, ErrCrashed)
	}
	return f.fs.begin(op, f.name, n)
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.check(OpReadAt, len(p)); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathErr("read", f.name, syscall.EINVAL)
	}
	end := off + int64(len(p))
	for _, r := range f.ino.badReads {
		if off < r[1] && end > r[0] {
			f.fs.injected.ReadErrors++
			return 0, pathErr("read", f.name, syscall.EIO)
		}
	}
	if f.fs.chance(f.fs.Faults.ReadErrorProb) {
		f.fs.injected.ReadErrors++
		return 0, pathErr("read", f.name, syscall.EIO)
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.check(OpWriteAt, len(p)); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathErr("write", f.name, syscall.EINVAL)
	}
	m := f.fs
	n := len(p)
	var werr error
	if limit := m.Faults.CapacityBytes; limit > 0 {
		grow := max(0, off+int64(n)-int64(len(f.ino.data)))
		if free := limit - m.used(); grow > free {
			n = int(max(0, int64(len(f.ino.data))+max(free, 0)-off))
			n = min(n, len(p))
			werr = pathErr("write", f.name, syscall.ENOSPC)
			m.injected.NoSpace++
		}
	}
	if n == 0 {
		return 0, werr
	}
	start := len(f.ino.spill)
	f.ino.spill = append(f.ino.spill, p[:n]...)
	data := f.ino.spill[start:len(f.ino.spill):len(f.ino.spill)]
	if m.chance(m.Faults.BitFlipProb) {
		data[m.rng.IntN(len(data))] ^= 1 << m.rng.UintN(8)
		m.injected.FlippedWrites++
	}
	at := off
	if m.chance(m.Faults.MisdirectProb) {
		m.injected.MisdirectedWrites++
		span := int64(max(len(data), 512))
		for at == off {
			at = max(0, off+m.rng.Int64N(2*span+1)-span)
		}
	}
	c := fileChange{off: at, data: data}
	f.ino.data = c.applyTo(f.ino.data)
	f.ino.pending = append(f.ino.pending, c)
	return n, werr
}

func (f *memFile) Sync() error {
	if err := f.check(OpSync, 0); err != nil {
		return err
	}
	if n := len(f.ino.pending); n > 0 && f.fs.Faults.LoseLastWrite {
		if c := f.ino.pending[n-1]; !c.truncate && len(c.data) > 0 {
			f.ino.lastSynced = [2]int64{c.off, c.off + int64(len(c.data))}
		}
	}
	if p := f.fs.Faults.LostWriteProb; p > 0 || len(f.ino.lost) > 0 {
		for _, c := range f.ino.pending {
			if c.truncate || len(c.data) == 0 {
				continue
			}
			r := [2]int64{c.off, c.off + int64(len(c.data))}
			// A write that lands over a lost one puts those bytes back.
			f.ino.lost = slices.DeleteFunc(f.ino.lost, func(l [2]int64) bool { return l[0] < r[1] && r[0] < l[1] })
			if f.fs.chance(p) {
				f.ino.lost = append(f.ino.lost, r)
			}
		}
	}
	f.ino.sync()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	if err := f.check(OpTruncate, 0); err != nil {
		return err
	}
	if size < 0 {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	f.ino.truncate(size)
	return nil
}

func (f *memFile) Size() (int64, error) {
	if err := f.check(OpSize, 0); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Close() error {
	if f.closed {
		return pathErr("close", f.name, ErrClosed)
	}
	f.closed = true
	return nil
}
