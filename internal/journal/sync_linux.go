package journal

import (
	"os"
	"syscall"
)

// fdatasync flushes the file's data (and only the metadata needed to read
// it back), as bbolt does on Linux.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
