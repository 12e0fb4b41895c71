//go:build !linux

package disk

// CreateStream implements StreamFS: outside Linux, a plain file.
func (OSFS) CreateStream(name string) (File, error) { return OSFS{}.Create(name) }
