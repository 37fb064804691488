// Package web is the local chat page (`claudemesh ui`, 03-daemon "Local web
// chat"): the page itself (HTML, CSS and one script, embedded, no build
// step), the HTTP server the daemon runs it on, and the `ui` verb that
// prints a one-time login link.
//
// The browser never holds a key. The page talks to the daemon through the
// routes this package forwards to the daemon's local API, in process, after
// its own checks; the local API's own guards (no Origin, loopback Host) stay
// as strict as ever for everything that reaches it over the Unix socket.
//
// Pieces: server.go (listener, routes, the forwarding allowlist), auth.go
// (single-use login tokens and session cookies), guard.go (Host, Origin and
// the security headers), assets.go (the embedded page), command.go (the
// `ui` verb), open.go (opening a browser on a desktop).
package web
