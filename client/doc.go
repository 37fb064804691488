// Package client is the one WebSocket client of the broker protocol
// (01-protocol.md), shared by the one-shot CLI verbs (cold path), the daemon
// and the bench, so that the handshake, the pinned broker key check, request
// correlation and the reconnect policy are written — and tested — once.
//
// The pieces:
//
//   - Dial opens one authenticated connection (member `hello` or
//     `session_hello`) and returns a *Conn. A Conn has one reader goroutine,
//     which dispatches responses (by reqId), acks (by send id), pushes,
//     receipts and system events in arrival order, and one writer goroutine
//     behind a bounded queue, because gorilla/websocket allows one writer at
//     a time and the daemon and bench write from many goroutines.
//   - StartPresence keeps a connection up across broker restarts and network
//     loss with the backoff and close-code policy of 01-protocol §9; the
//     daemon runs one per mesh and one per agent session.
//   - Open, SealDM and SealMulti turn plaintext into `send` frames and pushes
//     back into plaintext (02-crypto.md), so the cold inbox and the daemon
//     decrypt the same way and report failures the same way.
//   - RESTBase, CreateMesh and Join are the REST calls a client makes before
//     it has an identity in a mesh.
//
// Every failure is a *Error with a stable Code: the broker's code when the
// broker said no, or one of the Code* constants of this package.
package client
