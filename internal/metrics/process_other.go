//go:build !linux

package metrics

import "bufio"

// writeProcess has no /proc to read outside Linux; the process_* metrics
// are Linux-only.
func writeProcess(*bufio.Writer) {}
