package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"claudemesh/client"
	"claudemesh/wire"
)

// cleanupTimeout bounds the removal of a run's members from a --broker.
const cleanupTimeout = 2 * time.Minute

// cleanUpExternal removes from an external broker (--broker) the members
// the run enrolled, as its operator (DELETE
// /v1/admin/meshes/{mesh}/members/{member}): their records and whatever
// is still queued for them go with them, so a run does not leave its
// load behind on a broker that goes on serving. The mesh itself and its
// owner record stay, as a broker has no way to delete a mesh (its owner
// key, made for the run, is gone with it): the run says so, and says
// what it could not remove and how to.
func (r *run) cleanUpExternal() {
	if r.cfg.BrokerURL == "" || r.meshID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	mesh := r.slug
	members, err := client.OperatorMembers(ctx, r.url, r.token, r.meshID)
	if err != nil {
		r.warnf("could not list the members of the bench's mesh %s on %s to remove them (%v): they stay there, with what is queued for them; "+
			"remove each with claudemesh mesh remove-member NAME --mesh %s --broker %s --operator-token-file FILE", mesh, r.url, err, mesh, r.url)
		return
	}
	var ids []string
	for _, m := range members {
		if m.MemberID != r.owner.MemberID && m.MemberRole != wire.MemberOwner {
			ids = append(ids, m.MemberID)
		}
	}
	r.progressf("removing the bench's %d members from %s", len(ids), r.url)
	workers := newJoiners(r.url, setupWorkers)
	var mu sync.Mutex
	var firstErr error
	removed, dropped := 0, 0
	parallel(ctx, len(ids), func(worker, i int) error {
		n, err := workers[worker].remove(ctx, r.url, r.token, r.meshID, ids[i])
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return nil // the others are still removed
		}
		removed++
		dropped += n
		return nil
	})
	if removed < len(ids) {
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		r.warnf("removed %d of the bench's %d members from %s; %d stay in its mesh %s with what is queued for them (%v), and so does the mesh "+
			"(a broker cannot delete one): remove each member with claudemesh mesh remove-member MEMBER --mesh %s --broker %s --operator-token-file FILE",
			removed, len(ids), r.url, len(ids)-removed, mesh, firstErr, mesh, r.url)
		return
	}
	r.notef("removed the bench's %d members from %s (%d undelivered messages with them); its mesh %s stays there with only its owner record, "+
		"as a broker cannot delete a mesh", removed, r.url, dropped, mesh)
}

func (r *run) notef(format string, args ...any) {
	if r.cfg.Note != nil {
		r.cfg.Note(fmt.Sprintf(format, args...))
	}
}

// remove is client.RemoveMember over this joiner's HTTP client (spread
// over loopback addresses like the joins, so a run of thousands of
// members is not held to one address's REST rate), retried while
// rate-limited. It returns the deliveries dropped with the member.
func (j *joiner) remove(ctx context.Context, brokerURL, token, mesh, memberID string) (int, error) {
	endpoint := client.RESTBase(brokerURL) + "/v1/admin/meshes/" + url.PathEscape(mesh) + "/members/" + url.PathEscape(memberID)
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		hc := j.plain
		if j.bound != nil {
			hc = j.bound
		}
		n, retryAfter, err := deleteMember(ctx, hc, endpoint, token)
		if err != nil && j.bound != nil && errors.Is(err, syscall.EADDRNOTAVAIL) {
			j.bound = nil // this system has only 127.0.0.1
			continue
		}
		if err == nil || retryAfter == 0 || attempt >= maxRetries {
			return n, err
		}
		if err := sleep(ctx, max(retryAfter, backoff)); err != nil {
			return 0, err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func deleteMember(ctx context.Context, hc *http.Client, endpoint, token string) (dropped int, retryAfter time.Duration, _ error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, endpoint, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return 0, max(time.Duration(s)*time.Second, 50*time.Millisecond), fmt.Errorf("rate_limited: %s", data)
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if wire.Decode(data, &eb) == nil && eb.Error.Code != "" {
			return 0, 0, &client.Error{Code: eb.Error.Code, Message: eb.Error.Message, Status: resp.StatusCode}
		}
		return 0, 0, fmt.Errorf("DELETE %s: HTTP %d: %.200s", endpoint, resp.StatusCode, data)
	}
	var out client.RemovedMember
	if err := wire.Decode(data, &out); err != nil {
		return 0, 0, fmt.Errorf("answer of %s: %w", endpoint, err)
	}
	return out.DroppedDeliveries, 0, nil
}
