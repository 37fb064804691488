package client

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"claudemesh/wire"
)

// Fail-over between the public URLs of a clustered broker. Every node signs
// its challenges with the same broker key, so the key pinned at join holds
// on every URL and each connection still proves it (handshake): a wrong or
// hostile URL in the list can only fail, never be trusted.
//
// The policy, in one place for the one-shot verbs (Dial) and for the
// daemon's and the cold inbox's reconnecting presences (Presence):
//   - a dial tries the URLs one after another in one pass, starting with
//     the URL that last completed a handshake for the mesh in this
//     process; a refused connection costs nothing, so there is no wait
//     between the URLs of a pass;
//   - after a connection drops, the next pass starts at another URL (a
//     random one of the others, so a dead node's clients spread over the
//     survivors) and tries the dropped one last;
//   - between passes, and before the first pass after a drop, a presence
//     waits FailoverBackoff: full jitter (uniform in [0, step]) on the
//     1, 2, 4, 8, 16, 30 s schedule of 01-protocol §9 with the same cap.

// failoverHandshakeTimeout bounds the handshake with one URL of a pass when
// others are left to try, so a node whose machine vanished (no RST, the
// connect just hangs) delays the fail-over by this much, not by the whole
// handshake timeout. The last URL of a pass gets the full timeout.
const failoverHandshakeTimeout = 5 * time.Second

// FailoverBackoff is the delay before reconnect pass n (0-based) of an
// identity with several broker URLs: uniform in [0, d] where d is
// Backoff's step for n without jitter, capped at max (0: the default cap).
// Full jitter, because when a node dies all of its clients lose their
// connection in the same instant and should not reach the survivors
// together.
func FailoverBackoff(attempt int, max time.Duration) time.Duration {
	return rand.N(backoffStep(attempt, max) + 1)
}

// lastGood remembers, per mesh, the URL that last completed a handshake in
// this process, so a later dial (a session presence after its mesh's, a
// verb in a long-running process) goes to the node that works.
var lastGood sync.Map // meshID -> URL

func noteGoodURL(meshID, url string) { lastGood.Store(meshID, url) }

func goodURL(meshID string) string {
	if v, ok := lastGood.Load(meshID); ok {
		return v.(string)
	}
	return ""
}

// urls is the identity's URL list: BrokerURL, then BrokerURLs, each once.
// An invalid list element was refused where the list was read (config,
// invite, hello_ack); here it is skipped rather than dialled.
func (id MeshIdentity) urls() []string {
	out := []string{id.BrokerURL}
	for _, u := range id.BrokerURLs {
		if wire.CheckBrokerURL(u) == nil && !slices.Contains(out, u) && len(out) < wire.MaxBrokerURLs {
			out = append(out, u)
		}
	}
	return out
}

// moveFront returns urls with u first (unchanged when u is not in it).
func moveFront(urls []string, u string) []string {
	i := slices.Index(urls, u)
	if i <= 0 {
		return urls
	}
	out := make([]string, 0, len(urls))
	out = append(out, u)
	out = append(out, urls[:i]...)
	return append(out, urls[i+1:]...)
}

// afterDrop is the order of the pass after a connection to dropped ended:
// the other URLs from a random one on (in list order, wrapping), dropped
// last.
func afterDrop(urls []string, dropped string) []string {
	var others []string
	for _, u := range urls {
		if u != dropped {
			others = append(others, u)
		}
	}
	if len(others) == 0 {
		return urls
	}
	k := rand.N(len(others))
	out := append(slices.Clone(others[k:]), others[:k]...)
	if slices.Contains(urls, dropped) {
		out = append(out, dropped)
	}
	return out
}

// stopsPass reports whether a refusal by one URL ends the pass: the member
// itself was refused (banned, revoked, kicked, left, replaced) or our own
// request is invalid — another node of the same cluster would answer the
// same. Anything else (unreachable, timeout, capacity, shutting down, a
// server without the pinned key) is about that URL: try the next.
func stopsPass(err error) bool {
	switch dialVerdict(err) {
	case stopBanned, stopKicked, stopClosed:
		return true
	}
	return false
}

// dialPass tries urls in order, one handshake each, and returns the first
// connection. When all fail, the error is passError's choice, with every
// URL's failure in its message.
func dialPass(ctx context.Context, id MeshIdentity, opts DialOptions, urls []string) (*Conn, error) {
	if len(urls) == 1 {
		id.BrokerURL = urls[0]
		return dialOnce(ctx, id, opts)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for i, u := range urls {
		one, o := id, opts
		one.BrokerURL = u
		if i < len(urls)-1 {
			hs := o.HandshakeTimeout
			if hs <= 0 {
				hs = DefaultHandshakeTimeout
			}
			o.HandshakeTimeout = min(hs, failoverHandshakeTimeout)
		}
		c, err := dialOnce(ctx, one, o)
		if err == nil {
			noteGoodURL(id.MeshID, u)
			return c, nil
		}
		if ctx.Err() != nil || stopsPass(err) {
			return nil, err
		}
		log.Debug("broker URL failed; trying the next", "mesh", id.MeshID, "url", u, "err", err)
		errs = append(errs, err)
	}
	return nil, passError(urls, errs)
}

// passError is the error of a pass in which every URL failed: the first
// that asks to retry later (a node that answered "unavailable" or "busy"
// with Retry-After, so the caller waits and makes another pass rather than
// giving up on a dead node's "unreachable"), else the first that is not a
// key mismatch (so one hostile URL among dead ones does not stop a
// presence for good), else the first.
func passError(urls []string, errs []error) error {
	pick := slices.IndexFunc(errs, func(err error) bool { return CodeOf(err) != CodeBrokerKeyMismatch && RetryAfter(err) > 0 })
	if pick < 0 {
		pick = max(slices.IndexFunc(errs, func(err error) bool { return CodeOf(err) != CodeBrokerKeyMismatch }), 0)
	}
	var chosen Error
	if e, ok := errs[pick].(*Error); ok {
		chosen = *e
	} else {
		chosen = Error{Code: CodeUnreachable, Message: errs[pick].Error(), cause: errs[pick]}
	}
	var b strings.Builder
	for i, err := range errs {
		if i != pick {
			fmt.Fprintf(&b, "; %s: %s", urls[i], CodeOf(err))
		}
	}
	if len(urls) > 1 {
		chosen.Message = fmt.Sprintf("%s (all %d broker URLs failed%s)", chosen.Message, len(urls), b.String())
	}
	return &chosen
}

// dialURLs is Dial over an explicit order, with Dial's Retry-After waits.
func dialURLs(ctx context.Context, id MeshIdentity, opts DialOptions, urls []string) (*Conn, error) {
	for attempt := 0; ; attempt++ {
		c, err := dialPass(ctx, id, opts, urls)
		if err == nil || !waitRetryAfter(ctx, err, attempt) {
			return c, err
		}
	}
}
