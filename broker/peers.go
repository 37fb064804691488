package broker

import (
	"strconv"
	"strings"

	"claudemesh/wire"
)

// handleListPeers answers list_peers one page at a time. A page stops
// before its frame would pass Config.peersPageBytes, and `more`/`next` tell
// the client to ask again: however many presences a mesh has, and however
// large one member makes its entries, no requester's answer can outgrow its
// send buffer and get it cut off with 4008 (issue: a member with thousands
// of groups took a whole mesh offline this way).
func (c *conn) handleListPeers(data []byte, env wire.Envelope) {
	var req wire.ListPeers
	if err := wire.Decode(data, &req); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	var after *peerCursor
	if req.After != "" {
		cur, ok := parsePeerCursor(req.After)
		if !ok {
			c.sendError(env.ReqID, wire.CodeInvalidArgument, "after must be the next value of a previous peers answer")
			return
		}
		after = &cur
	}
	c.ms.mu.Lock()
	peers := c.ms.listPeers(c.mem, c.b.cfg.WorkingDecay)
	// Presence events held back for this connection go before the answer,
	// so events and peers stay in the order they happened.
	c.releaseEventsLocked()
	c.ms.mu.Unlock()
	// Each peer is encoded once, and the page is assembled from those bytes
	// (reqId and cursor are plain ASCII by their patterns).
	budget := c.b.cfg.peersPageBytes() - 256 // the envelope and cursor
	frame := make([]byte, 0, min(budget, 64<<10))
	frame = append(frame, `{"type":"peers","reqId":"`...)
	frame = append(frame, env.ReqID...)
	frame = append(frame, `","peers":[`...)
	n, next := 0, ""
	for i := range peers {
		p := &peers[i]
		if after != nil && !after.before(cursorOf(p)) {
			continue
		}
		enc := wire.MustEncode(p)
		if len(enc)+1 > budget && n > 0 {
			next = cursorOf(&peers[i-1]).String()
			break
		}
		budget -= len(enc) + 1
		if n > 0 {
			frame = append(frame, ',')
		}
		frame = append(frame, enc...)
		n++
	}
	frame = append(frame, ']')
	if next != "" {
		frame = append(frame, `,"more":true,"next":"`...)
		frame = append(frame, next...)
		frame = append(frame, '"')
	}
	frame = append(frame, '}')
	c.enqueue(frame)
}

// peerCursor is a position in list_peers' order: connectedAt, then pubkey
// and sessionId.
type peerCursor struct {
	connectedAt int64
	key         string // pubkey + sessionId, as listPeers sorts
	pubkey      string
	sessionID   string
}

func cursorOf(p *wire.Peer) peerCursor {
	return peerCursor{connectedAt: p.ConnectedAt, key: p.Pubkey + p.SessionID, pubkey: p.Pubkey, sessionID: p.SessionID}
}

// before reports whether c sorts strictly before o.
func (c peerCursor) before(o peerCursor) bool {
	if c.connectedAt != o.connectedAt {
		return c.connectedAt < o.connectedAt
	}
	return c.key < o.key
}

// String is the wire form: <connectedAt>.<pubkey>.<sessionId> (a sessionId
// may contain dots; it is last).
func (c peerCursor) String() string {
	return strconv.FormatInt(c.connectedAt, 10) + "." + c.pubkey + "." + c.sessionID
}

func parsePeerCursor(s string) (peerCursor, bool) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) != 3 || !wire.IsHex(parts[1], 64) || (parts[2] != "" && !wire.ValidSessionID(parts[2])) {
		return peerCursor{}, false
	}
	at, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return peerCursor{}, false
	}
	return peerCursor{connectedAt: at, key: parts[1] + parts[2], pubkey: parts[1], sessionID: parts[2]}, true
}
