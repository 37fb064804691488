package localapi

import "strings"

// Routes the local chat page needs beyond 03-daemon's table. They are on
// the socket API like every other route (so they can be tested and used
// without a browser); the page reaches the read-only ones, and never
// /v1/web/login, through the web server's forwarding (package web).

// WebLogin answers POST /v1/web/login: a single-use login link for the
// page, valid until ExpiresAt (ms).
type WebLogin struct {
	URL       string `json:"url"`
	ExpiresAt int64  `json:"expiresAt"`
	// PeerCheck is web.Server.PeerCheck: "on", "off"
	// (--web-any-local-user) or "unsupported".
	PeerCheck string `json:"peerCheck,omitempty"`
}

// WebState is GET /v1/web/state: who the page speaks for in each mesh,
// each mesh's broker state, and the newest event id at the time of the
// answer (a page opens its event stream from there, so nothing that
// arrives after its first reads is missed).
type WebState struct {
	Meshes      []WebMesh `json:"meshes"`
	LastEventID string    `json:"lastEventId"`
}

// WebMesh is one joined mesh as the page shows it.
type WebMesh struct {
	Slug        string `json:"slug"`
	MeshID      string `json:"meshId"`
	Name        string `json:"name"`
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	Role        string `json:"role"`
	State       string `json:"state"`
	// WebPresence tells whether the human's web presence (peerType
	// human, channel web) is connected in this mesh.
	WebPresence bool `json:"webPresence"`
}

// WebThread is one conversation of a mesh in the page's sidebar. Thread is
// its key: a pubkey (a DM with a member or a session), `@group`, `*`
// (broadcasts) or `#topic`.
type WebThread struct {
	Mesh        string `json:"mesh"`
	Thread      string `json:"thread"`
	Kind        string `json:"kind"` // dm | group | broadcast | topic
	Name        string `json:"name,omitempty"`
	LastAt      int64  `json:"lastAt"`
	LastPreview string `json:"lastPreview,omitempty"`
	Unread      int    `json:"unread"`
	// UpTo is the last inbox row id (event id) the counts cover: a message
	// event of a greater id came after them, one of this id or less is
	// counted already (the page must not count it again when the event
	// stream replays it after the list was read).
	UpTo uint64 `json:"upTo"`
}

// WebItem is one message of a thread: received (In) or sent by this member
// (Out, with its delivery state). At is receivedAt or enqueuedAt.
type WebItem struct {
	Thread string     `json:"thread"`
	At     int64      `json:"at"`
	In     *InboxRow  `json:"in,omitempty"`
	Out    *OutboxRow `json:"out,omitempty"`
}

// WebThreadPage is GET /v1/web/thread: items newest first, and the cursor
// of the next (older) page, "" when there is none.
type WebThreadPage struct {
	Items  []WebItem `json:"items"`
	Before string    `json:"before,omitempty"`
}

// SecretInQuery names the first query parameter that looks like a
// credential (token, auth, secret, key), or "". The local API refuses
// such a request (query strings end up in logs and histories), and so
// does the page's server, each with the credential it does take.
func SecretInQuery(q map[string][]string) string {
	for k := range q {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "token") || strings.Contains(lk, "auth") || strings.Contains(lk, "secret") || lk == "key" || lk == "apikey" {
			return k
		}
	}
	return ""
}
