//go:build !linux

package journal

import "os"

// fdatasync falls back to a full sync where there is no fdatasync.
func fdatasync(f *os.File) error { return f.Sync() }
