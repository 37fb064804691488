package broker

import (
	"sync"
	"unicode/utf8"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// streamHub fans committed topic posts out to the SSE streams of
// GET /v1/topics/{name}/stream. publish runs on the commit dispatcher, so
// events reach a stream in commit order, the order of the topic's seqs;
// nothing polls. A stream that cannot keep up is dropped from the hub and
// catches up from the store (the handler notices and re-subscribes), so one
// slow bot never holds up the commit path.
type streamHub struct {
	mu   sync.Mutex
	subs map[string]map[*streamSub]struct{} // meshId|topicId → streams
	n    int
}

// streamEvent is one post as a stream sends it: its place in the topic, its
// id and the REST message JSON (encoded once per post, whatever the number
// of streams).
type streamEvent struct {
	seq  uint64
	id   string
	data []byte
}

type streamSub struct {
	ch      chan streamEvent
	dropped chan struct{}
	once    sync.Once
}

// streamBuffer is how many events a stream may lag behind before it is
// dropped and made to catch up from the store.
const streamBuffer = 256

func newStreamHub() *streamHub { return &streamHub{subs: map[string]map[*streamSub]struct{}{}} }

func streamKey(meshID, topicID string) string { return meshID + "|" + topicID }

func (h *streamHub) subscribe(meshID, topicID string) *streamSub {
	s := &streamSub{ch: make(chan streamEvent, streamBuffer), dropped: make(chan struct{})}
	k := streamKey(meshID, topicID)
	h.mu.Lock()
	if h.subs[k] == nil {
		h.subs[k] = map[*streamSub]struct{}{}
	}
	h.subs[k][s] = struct{}{}
	h.n++
	h.mu.Unlock()
	return s
}

func (h *streamHub) unsubscribe(meshID, topicID string, s *streamSub) {
	k := streamKey(meshID, topicID)
	h.mu.Lock()
	if set := h.subs[k]; set != nil {
		if _, ok := set[s]; ok {
			delete(set, s)
			h.n--
		}
		if len(set) == 0 {
			delete(h.subs, k)
		}
	}
	h.mu.Unlock()
	s.once.Do(func() { close(s.dropped) })
}

// publish hands a committed post to the topic's streams.
func (h *streamHub) publish(meshID, topicID string, post *store.TopicPost) {
	k := streamKey(meshID, topicID)
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[k]
	if len(set) == 0 {
		return
	}
	ev := streamEvent{seq: post.Seq, id: post.ID, data: restMessage(post.Push)}
	for s := range set {
		select {
		case s.ch <- ev:
		default:
			delete(set, s)
			h.n--
			s.once.Do(func() { close(s.dropped) })
		}
	}
}

// count is the number of open streams (metrics).
func (h *streamHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// restMessage is a stored push as the REST routes show it: the push as is,
// plus `text` for a plaintext topic's post (bodyVersion 1), so a bot reads
// plaintext topics without decoding base64 itself.
func restMessage(push []byte) []byte {
	var p wire.Push
	if wire.Decode(push, &p) != nil || p.BodyVersion != wire.BodyPlaintext {
		return push
	}
	text, err := cmcrypto.DecodeB64(p.Ciphertext)
	if err != nil || !utf8.Valid(text) {
		return push
	}
	tb := wire.MustEncode(string(text))
	out := make([]byte, 0, len(push)+len(tb)+9)
	out = append(out, push[:len(push)-1]...)
	out = append(out, `,"text":`...)
	out = append(out, tb...)
	return append(out, '}')
}
