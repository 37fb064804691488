// Package buildinfo says which claudemesh this is: the release version set
// at link time and the VCS revision the Go toolchain embeds, so a bug report
// from `claudemesh version --json` identifies the exact build.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Version is the release version. Release builds set it with
// -ldflags "-X claudemesh/internal/buildinfo.Version=v1.2.3"; it is a
// variable only because -X can set nothing else.
var Version = "0.1.0-dev"

// Info describes this build.
type Info struct {
	Version string
	// Go is the toolchain version, e.g. "go1.26.0".
	Go string
	// Commit is the VCS revision, empty when built outside a checkout
	// (or with -buildvcs=false).
	Commit string
	// Modified says the checkout had uncommitted changes.
	Modified bool
}

// Read returns this build's Info.
func Read() Info {
	info := Info{Version: Version, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}
