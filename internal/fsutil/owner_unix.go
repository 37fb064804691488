//go:build unix

package fsutil

import (
	"io/fs"
	"os"
	"syscall"
)

// ownedByUs reports whether the effective user owns fi, i.e. may chmod it.
func ownedByUs(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || int(st.Uid) == os.Geteuid()
}
