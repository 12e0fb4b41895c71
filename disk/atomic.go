package disk

import (
	"fmt"
	"path/filepath"
)

// WriteFile replaces the file at path with data so that a crash leaves
// either the old file or the new one whole, never a mix or an empty file:
// the data goes to path+".tmp" first, is fsynced, renamed over path, and
// the directory is fsynced.
func WriteFile(fsys FS, path string, data []byte) error {
	tmp := path + tmpExt
	f, err := fsys.Create(tmp)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err != nil {
		_ = fsys.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fsys.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
