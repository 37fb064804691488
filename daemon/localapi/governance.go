package localapi

// AuditStatus is the outcome of the daemon's last check of one mesh's
// audit chain (`daemon status --json` field `audit`, by mesh slug).
type AuditStatus struct {
	OK          bool   `json:"ok"`
	CheckedAt   int64  `json:"checkedAt"`
	Seq         uint64 `json:"seq,omitzero"`
	Problem     string `json:"problem,omitempty"`
	FirstBadSeq uint64 `json:"firstBadSeq,omitzero"`
	Message     string `json:"message,omitempty"`
	// Error is set when the last check could not run (the broker did not
	// answer); OK is then false too. Problem and what goes with it are
	// then those of the last check that ran and found one (kept until a
	// check runs again), or empty: nothing was found wrong.
	Error string `json:"error,omitempty"`
}

// Skill is a mesh skill (GET /v1/skills and /v1/skills/{name}); Body only
// for a single skill.
type Skill struct {
	Mesh         string   `json:"mesh"`
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	Tags         []string `json:"tags"`
	AuthorName   string   `json:"authorName"`
	AuthorPubkey string   `json:"authorPubkey"`
	Size         int      `json:"size"`
	UpdatedAt    int64    `json:"updatedAt"`
	Body         string   `json:"body,omitempty"`
}
