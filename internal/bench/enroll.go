package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// setupWorkers bounds concurrent joins and dials. The broker admits 32
// unauthenticated handshakes per address at once (MaxHandshakesPerIP), so
// 16 keeps set-up fast without ever tripping that limit.
const setupWorkers = 16

// maxRetries bounds the retries of a join or dial the broker asked to slow
// down (rate_limited, capacity).
const maxRetries = 20

// createMesh creates the bench's own mesh with the operator token; its
// owner is a fresh key that only enrolls the peers and holds the idle
// connections, so it is never a sender or recipient.
func (r *run) createMesh(ctx context.Context) error {
	owner, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return err
	}
	suffix := cmcrypto.RandomHex32()[:10]
	res, err := client.CreateMesh(ctx, r.url, r.token, client.CreateMeshRequest{
		Name: "Bench " + suffix, Slug: "bench-" + suffix,
		OwnerPubkey: owner.PublicHex(), OwnerDisplayName: "bench-owner",
	})
	if err != nil {
		return fmt.Errorf("creating the bench mesh: %w", err)
	}
	if r.child != nil && res.BrokerPubkey != r.child.pubkey {
		return fmt.Errorf("the broker answered with key %s but logged %s", res.BrokerPubkey, r.child.pubkey)
	}
	if len(r.nodes) > 0 && res.BrokerPubkey != r.nodes[0].pubkey {
		return fmt.Errorf("cluster node n1 answered with key %s but logged %s", res.BrokerPubkey, r.nodes[0].pubkey)
	}
	r.meshID, r.slug, r.meshName = res.MeshID, res.Slug, res.Name
	r.owner = client.MeshIdentity{MeshID: res.MeshID, MemberID: res.MemberID,
		BrokerURL: r.url, BrokerPubkey: res.BrokerPubkey, Member: owner}
	return nil
}

// enroll makes every peer a member exactly as `invite` and `join` do: the
// owner signs one invite with maxUses = len(peers) and registers it with
// invite_create, then each peer enrolls with its own new key and a signed
// enrollment over POST /v1/join.
func (r *run) enroll(ctx context.Context) error {
	inv, token, err := r.registerInvite(ctx, len(r.peers))
	if err != nil {
		return err
	}

	var done atomic.Int64
	return parallel(ctx, len(r.peers), func(worker, i int) error {
		p := r.peers[i]
		name := fmt.Sprintf("peer-%05d", i)
		req, err := client.NewJoinRequest(token, inv.MeshID, inv.InviteID, name, p.key, time.Now())
		if err != nil {
			return err
		}
		res, err := r.joiners[worker].join(ctx, r.url, req)
		if err != nil {
			return fmt.Errorf("%s joining: %w", name, err)
		}
		if res.BrokerPubkey != inv.BrokerPubkey {
			return fmt.Errorf("%s joining: the broker's key differs from the invite's", name)
		}
		p.ident = client.MeshIdentity{MeshID: res.MeshID, MemberID: res.MemberID,
			BrokerURL: r.url, BrokerPubkey: inv.BrokerPubkey, Member: p.key}
		r.progressf("enrolling peers: %d/%d", done.Add(1), len(r.peers))
		return nil
	})
}

// registerInvite has the owner sign an invite for maxUses members and
// register it with invite_create, as `claudemesh invite` does.
func (r *run) registerInvite(ctx context.Context, maxUses int) (*cmcrypto.Invite, string, error) {
	inv := &cmcrypto.Invite{V: 1, MeshID: r.meshID, MeshSlug: r.slug, MeshName: r.meshName,
		BrokerURL: r.url, BrokerPubkey: r.owner.BrokerPubkey, InviteID: client.NewID(),
		Role: wire.MemberMember, ExpiresAt: time.Now().Add(time.Hour).UnixMilli(), MaxUses: maxUses}
	if err := inv.Sign(r.owner.Member); err != nil {
		return nil, "", err
	}
	token, err := inv.Token()
	if err != nil {
		return nil, "", err
	}
	oc, err := r.dialRetry(ctx, r.owner, client.DialOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("owner connection: %w", err)
	}
	_, err = oc.InviteCreate(ctx, token)
	oc.Close()
	if err != nil {
		return nil, "", fmt.Errorf("registering the invite: %w", err)
	}
	return inv, token, nil
}

// parallel runs fn(worker, i) for i in [0, n) on setupWorkers goroutines and
// returns the first error, after which the remaining items are skipped.
func parallel(ctx context.Context, n int, fn func(worker, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for w := range min(setupWorkers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(w, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// dialRetry dials, retrying while the broker sheds handshake load
// (rate_limited, or capacity answered as a refused upgrade): a bench that
// opens thousands of connections must not fail on the broker's own
// protection against handshake floods.
func (r *run) dialRetry(ctx context.Context, id client.MeshIdentity, opts client.DialOptions) (*client.Conn, error) {
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		c, err := client.Dial(ctx, id, opts)
		if err == nil {
			return c, nil
		}
		code := client.CodeOf(err)
		retryable := code == wire.CodeRateLimited || code == wire.CodeCapacity || code == client.CodeUnreachable ||
			// A cluster node that has not applied the member's join yet
			// (it was enrolled through node 1) does not know it.
			(len(r.nodes) > 1 && code == wire.CodeUnauthorized)
		if !retryable || attempt >= maxRetries || ctx.Err() != nil {
			return nil, err
		}
		if d := client.RetryAfter(err); d > backoff {
			backoff = d
		}
		if err := sleep(ctx, backoff); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// joiner posts enrollments from one source address. The broker rate-limits
// unauthenticated REST routes per client IP (20/s, burst 60) against
// floods; a bench enrolling a thousand members from one address would
// spend a minute in that limiter, measuring nothing. On a loopback broker
// each worker therefore uses its own address of 127.0.0.0/8 (every one of
// them is local on Linux); elsewhere, or if binding fails, it falls back
// to the default address and honours Retry-After.
type joiner struct {
	bound *http.Client // nil when no source address is used
	plain *http.Client
}

func newJoiners(brokerURL string, n int) []*joiner {
	out := make([]*joiner, n)
	loopback := isLoopbackV4(brokerURL)
	for i := range out {
		j := &joiner{plain: &http.Client{Timeout: 30 * time.Second}}
		if loopback {
			src := net.IPv4(127, 0, byte(1+i/250), byte(2+i%250))
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
			j.bound = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 2}}
		}
		out[i] = j
	}
	return out
}

func isLoopbackV4(brokerURL string) bool {
	u, err := url.Parse(brokerURL)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

// join is client.Join over this joiner's HTTP client, with the same
// request and answer types, retried while rate-limited.
func (j *joiner) join(ctx context.Context, brokerURL string, req client.JoinRequest) (*client.JoinResponse, error) {
	body, err := wire.Encode(req)
	if err != nil {
		return nil, err
	}
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		hc := j.plain
		if j.bound != nil {
			hc = j.bound
		}
		res, retryAfter, err := postJoin(ctx, hc, client.RESTBase(brokerURL)+"/v1/join", body)
		if err != nil && j.bound != nil && errors.Is(err, syscall.EADDRNOTAVAIL) {
			j.bound = nil // this system has only 127.0.0.1
			continue
		}
		if err == nil || retryAfter == 0 || attempt >= maxRetries {
			return res, err
		}
		if err := sleep(ctx, max(retryAfter, backoff)); err != nil {
			return nil, err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// postJoin posts one enrollment; retryAfter > 0 means "rate-limited, try
// again".
func postJoin(ctx context.Context, hc *http.Client, endpoint string, body []byte) (_ *client.JoinResponse, retryAfter time.Duration, _ error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return nil, max(time.Duration(s)*time.Second, 50*time.Millisecond), fmt.Errorf("rate_limited: %s", data)
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if wire.Decode(data, &eb) == nil && eb.Error.Code != "" {
			return nil, 0, &client.Error{Code: eb.Error.Code, Message: eb.Error.Message, Status: resp.StatusCode}
		}
		return nil, 0, fmt.Errorf("POST %s: HTTP %d: %.200s", endpoint, resp.StatusCode, data)
	}
	var out client.JoinResponse
	if err := wire.Decode(data, &out); err != nil {
		return nil, 0, fmt.Errorf("answer of %s: %w", endpoint, err)
	}
	return &out, 0, nil
}
