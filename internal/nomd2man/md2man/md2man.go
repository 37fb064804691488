// Package md2man stands in for github.com/cpuguy83/go-md2man/v2/md2man in
// this module (see the replace directive in the top-level go.mod).
//
// urfave/cli/v2 links its man-page generator (App.ToMan, which calls
// md2man.Render) unless built with -tags urfave_cli_no_docs, and md2man
// brings blackfriday, whose package initialisation — an HTML entity map of
// two thousand entries and a set of regexps, 214 KB of allocations — ran at
// the start of every claudemesh command, `claudemesh send` included.
// claudemesh never renders man pages, and `go build`, `go run` and `go
// test` cannot be asked to pass a build tag, so the dependency is replaced
// by this package: Render returns the markdown unchanged.
package md2man

// Render returns doc unchanged: claudemesh renders no man pages.
func Render(doc []byte) []byte { return doc }
