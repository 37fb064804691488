package client

import (
	"context"

	"claudemesh/wire"
)

// AuditQuery reads entries of the mesh's audit chain, newest first (see
// wire.AuditQuery for the selection).
func (c *Conn) AuditQuery(ctx context.Context, q wire.AuditQuery) (*wire.AuditEntries, error) {
	q.Type = wire.TypeAuditQuery
	return roundTrip[wire.AuditEntries](ctx, c, &q, wire.TypeAuditEntries)
}

// AuditCheckpoint asks the broker to sign the head of the mesh's chain. The
// signature is not checked here; VerifyAudit does that against the pinned
// key.
func (c *Conn) AuditCheckpoint(ctx context.Context) (*wire.AuditCheckpoint, error) {
	return roundTrip[wire.AuditCheckpoint](ctx, c, &wire.Request{Type: wire.TypeAuditCheckpoint}, wire.TypeAuditCheckpoint)
}
