package store

import (
	"bytes"
	"encoding/hex"

	"claudemesh/wire"
)

// What a cluster node learns from another node's entry is a list of puts
// and deletes by bucket path (the cluster package's Change). ClassifyChange
// and the decoders below are how the broker reads them without knowing the
// buckets' layout, which stays this package's.

// ChangeKind says what record a change touched.
type ChangeKind int

// Kinds of change the broker reacts to.
const (
	ChangeOther        ChangeKind = iota
	ChangeMeshInfo                // a mesh's info (a new mesh)
	ChangeMember                  // key: memberId
	ChangeSession                 // key: raw session pubkey
	ChangeGrants                  // key: raw recipient pubkey
	ChangeQueue                   // key: raw recipient ‖ seq
	ChangeTopic                   // topics, names, members, seals
	ChangeTopicPost               // Sub: the topic id; key: seq
	ChangeAudit                   // key: seq
	ChangeNotification            // key: raw member ‖ id
	ChangeAPIKey                  // key: keyId
	ChangeTopicMember             // a topic's membership; key: topicId ‖ raw member pubkey (TopicMemberKey)
	ChangeTopicSeal               // a topic key sealed for a member; key: TopicSealKey
)

// ClassifyChange names the mesh and kind of record a change at path (from
// the root) and key touched. Sub is the topic id of a post.
func ClassifyChange(path [][]byte, key []byte) (meshID string, kind ChangeKind, sub string) {
	if len(path) < 2 || !bytes.Equal(path[0], bucketMeshes) {
		return "", ChangeOther, ""
	}
	meshID = string(path[1])
	if len(path) == 2 {
		if bytes.Equal(key, keyInfo) {
			return meshID, ChangeMeshInfo, ""
		}
		return meshID, ChangeOther, ""
	}
	switch name := path[2]; {
	case bytes.Equal(name, bMembers):
		kind = ChangeMember
	case bytes.Equal(name, bSessions):
		kind = ChangeSession
	case bytes.Equal(name, bGrants):
		kind = ChangeGrants
	case bytes.Equal(name, bQueue):
		kind = ChangeQueue
	case bytes.Equal(name, bAudit):
		kind = ChangeAudit
	case bytes.Equal(name, bNotifs):
		kind = ChangeNotification
	case bytes.Equal(name, bAPIKeys):
		kind = ChangeAPIKey
	case bytes.Equal(name, bTopicMsgs):
		if len(path) == 4 {
			return meshID, ChangeTopicPost, string(path[3])
		}
		kind = ChangeTopic
	case bytes.Equal(name, bTopicMembers):
		kind = ChangeTopicMember
	case bytes.Equal(name, bTopicSeals):
		kind = ChangeTopicSeal
	case bytes.Equal(name, bTopics), bytes.Equal(name, bTopicNames), bytes.Equal(name, bMemberTopics):
		kind = ChangeTopic
	}
	return meshID, kind, ""
}

// TopicMemberKey splits a topic membership key into its topic id and the
// member's pubkey (hex).
func TopicMemberKey(k []byte) (topicID, pubkey string, ok bool) {
	if len(k) <= 32 {
		return "", "", false
	}
	return string(k[:len(k)-32]), hex.EncodeToString(k[len(k)-32:]), true
}

// TopicSealKey splits a seal's key (sealKey) into its topic id, recipient
// (hex) and key generation.
func TopicSealKey(k []byte) (topicID, recipient string, keyGen int, ok bool) {
	if len(k) <= 72 {
		return "", "", 0, false
	}
	n := len(k)
	return string(k[:n-72]), hex.EncodeToString(k[n-72 : n-40]), int(be64(k[n-40 : n-32])), true
}

// QueueKey splits a queue key into its recipient (hex) and sequence.
func QueueKey(k []byte) (recipient string, seq uint64, ok bool) {
	if len(k) != 40 {
		return "", 0, false
	}
	return hex.EncodeToString(k[:32]), be64(k[32:]), true
}

// HexKey is a raw 32-byte key of a session or grants record as hex.
func HexKey(k []byte) string { return hex.EncodeToString(k) }

// DecodeMember decodes a member record.
func DecodeMember(v []byte) (*Member, error) {
	var m Member
	return &m, dec(v, &m)
}

// DecodeSession decodes a known-session record.
func DecodeSession(v []byte) (*Session, error) {
	var s Session
	return &s, dec(v, &s)
}

// DecodeGrants decodes a recipient's grants.
func DecodeGrants(v []byte) (Grants, error) {
	g := Grants{}
	return g, dec(v, &g)
}

// DecodeQueueEntry decodes a queue entry.
func DecodeQueueEntry(v []byte) (*QueueEntry, error) {
	var e QueueEntry
	return &e, decodeQueueEntry(v, &e)
}

// DecodeTopicPost decodes a topic post stored at seq of topicID.
func DecodeTopicPost(topicID string, seq uint64, v []byte) (*TopicPost, error) {
	p := &TopicPost{Seq: seq, TopicID: topicID}
	return p, decodeTopicPost(v, p)
}

// DecodeAuditEntry decodes an audit chain entry.
func DecodeAuditEntry(v []byte) (*wire.AuditEntry, error) {
	var e wire.AuditEntry
	return &e, dec(v, &e)
}

// Be64 reads an 8-byte big-endian key (a sequence).
func Be64(k []byte) uint64 {
	if len(k) != 8 {
		return 0
	}
	return be64(k)
}

// keyLogSeq records, in a cluster node's file, the last log entry applied.
var keyLogSeq = []byte("clusterApplied")

// LogSeq is the log entry a cluster node's file is at (0 on a single
// broker).
func LogSeq(tx *Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyLogSeq); len(v) == 8 {
		return be64(v)
	}
	return 0
}
