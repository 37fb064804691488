package bench

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
)

// builtWithRace reports whether the Go executable at path was built with
// -race: its build information (what `go version -m` prints) has the line
// "build	-race=true". It reads the build information the linker embeds
// (Go 1.18 and later: a 16-byte-aligned header "\xff Go buildinf:", a
// pointer size, a flags byte with its inline-strings bit (2) set, then the Go version and the module
// information as varint-prefixed strings) itself: debug/buildinfo links
// debug/elf, debug/macho, debug/pe and debug/dwarf, whose package
// initialisers (~0.03 ms) ran in every claudemesh process for this one
// check of a --broker-exe. A file it cannot read or parse is not -race.
func builtWithRace(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	mod, ok := embeddedModInfo(data)
	return ok && hasRace(mod)
}

// hasRace reports whether module information says "build	-race=true".
func hasRace(mod string) bool {
	return strings.Contains("\n"+mod, "\nbuild\t-race=true\n")
}

// embeddedModInfo returns the module information of the Go executable in
// data, as runtime/debug.ReadBuildInfo's source (between its sentinels).
func embeddedModInfo(data []byte) (string, bool) {
	const magic = "\xff Go buildinf:"
	for off := 0; off < len(data); {
		i := bytes.Index(data[off:], []byte(magic))
		if i < 0 {
			break
		}
		i += off
		off = i + 1
		// The magic string also sits in the rodata of programs that look
		// for it (this one): only an aligned header with the inline-strings
		// flag whose strings parse, sentinels included, counts.
		if i%16 != 0 || len(data)-i < 32 || data[i+15]&2 == 0 {
			continue
		}
		_, rest, ok := varintString(data[i+32:])
		if !ok {
			continue
		}
		mod, _, ok := varintString(rest)
		// 16-byte sentinels around the text, and a newline before the last.
		if !ok || len(mod) < 33 || mod[len(mod)-17] != '\n' {
			continue
		}
		return mod[16 : len(mod)-16], true
	}
	return "", false
}

// varintString splits a uvarint-length-prefixed string off b.
func varintString(b []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
}
