package wire

// Error codes carried in `error` frames, `ack` errors and REST error bodies
// (01-protocol.md). They are stable snake_case words that clients switch on;
// the human text travels beside them in `message`.
const (
	CodeMalformed           = "malformed"
	CodeInvalidArgument     = "invalid_argument"
	CodeUnknownMessageType  = "unknown_message_type"
	CodeNoHello             = "no_hello"
	CodeHelloTimeout        = "hello_timeout"
	CodeTimestampSkew       = "timestamp_skew"
	CodeBadChallenge        = "bad_challenge"
	CodeBadSignature        = "bad_signature"
	CodeUnauthorized        = "unauthorized"
	CodeRevoked             = "revoked"
	CodeBanned              = "banned"
	CodeMemberIDMismatch    = "member_id_mismatch"
	CodeCapacity            = "capacity"
	CodeAttestationMismatch = "attestation_mismatch"
	CodeExpired             = "expired"
	CodeTTLTooLong          = "ttl_too_long"
	CodeBadAttestation      = "bad_attestation"
	// CodeSessionKeyConflict refuses a session_hello whose session key is
	// a member key of the mesh (current or revoked) or a session key
	// another member attested: a key has one owner.
	CodeSessionKeyConflict   = "session_key_conflict"
	CodePayloadTooLarge      = "payload_too_large"
	CodeRateLimited          = "rate_limited"
	CodeUnknownRecipient     = "unknown_recipient"
	CodeNotAMember           = "not_a_member"
	CodeStaleKeyGen          = "stale_key_gen"
	CodeTopicKeyMissing      = "topic_key_missing"
	CodeBlockedByRecipient   = "blocked_by_recipient"
	CodeIdempotencyKeyReused = "idempotency_key_reused"
	CodeRecipientQueueFull   = "recipient_queue_full"
	// CodeQuotaExceeded refuses a send that would take its sender's (or
	// its mesh's) undelivered bytes over the broker's quota.
	CodeQuotaExceeded = "quota_exceeded"
	CodeForbidden     = "forbidden"
	CodeNotFound      = "not_found"
	CodeInternal      = "internal"
	CodeShuttingDown  = "shutting_down"
	// CodeUnavailable: a broker of a cluster could not make a write
	// durable in time (no quorum of its nodes, or the node was catching up
	// with the log), so the write is not acknowledged. Comes with retryAfterMs;
	// the retry (same id: it may have been stored after all) may go to
	// this or another node.
	CodeUnavailable = "unavailable"

	// REST enrollment and administration.
	CodeMeshNotFound    = "mesh_not_found"
	CodeInviteNotFound  = "invite_not_found"
	CodeInviteRevoked   = "invite_revoked"
	CodeInviteExpired   = "invite_expired"
	CodeInviteExhausted = "invite_exhausted"
	CodeIssuerNotAdmin  = "issuer_not_admin"
	CodeNameTaken       = "name_taken"
	CodeSlugTaken       = "slug_taken"
	CodeInviteExists    = "invite_exists"
)

// WebSocket close codes and their snake_case reasons (01-protocol.md §9).
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseKicked        = 4001
	CloseBanned        = 4002
	CloseSlowConsumer  = 4008
	ReasonDisconnected = "disconnected"
	ReasonLeft         = "left"
	ReasonReplaced     = "session_replaced"
	ReasonShutdown     = "shutting_down"
	ReasonFrameTooBig  = "frame_too_big"
	ReasonKicked       = "kicked"
	// ReasonRemoved (with 4001) ends the connections of a member the
	// broker's operator removed: unlike a kick, reconnecting cannot work;
	// the member needs a new invite. A client that knows only 4001 reads
	// it as a kick.
	ReasonRemoved      = "removed"
	ReasonBanned       = "banned"
	ReasonSlowConsumer = "slow_consumer"
)
