package verbs

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	json "github.com/go-json-experiment/json"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// The topic verbs through the daemon's /v1/topics routes: the daemon holds
// the keys (and does this member's key duties all the time), so these are
// plain requests.

func topicPath(name, rest string) string {
	return "/v1/topics/" + url.PathEscape(strings.TrimPrefix(name, "#")) + rest
}

func topicRowOfAPI(t localapi.Topic) topicRow { return topicRowOf(t.Mesh, t.TopicInfo, t.HasKey) }

func (v *viaDaemon) TopicList(ctx context.Context, meshes []config.Mesh) []meshTopics {
	out := make([]meshTopics, len(meshes))
	for i, m := range meshes {
		out[i].Slug = m.Slug
		var list []localapi.Topic
		if _, err := v.api.Do(ctx, "GET", "/v1/topics?mesh="+url.QueryEscape(m.Slug), nil, &list); err != nil {
			out[i].Err = daemonError(err)
			continue
		}
		out[i].Rows = make([]topicRow, 0, len(list))
		for _, t := range list {
			out[i].Rows = append(out[i].Rows, topicRowOfAPI(t))
		}
	}
	return out
}

func (v *viaDaemon) TopicCreate(ctx context.Context, m *config.Mesh, o client.TopicCreateOptions) (*topicRow, error) {
	var t localapi.Topic
	_, err := v.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Mesh: m.Slug, Name: o.Name,
		Description: o.Description, Private: o.Private, Plaintext: o.Plaintext}, &t)
	if err != nil {
		return nil, daemonError(err)
	}
	row := topicRowOfAPI(t)
	return &row, nil
}

func (v *viaDaemon) topicPost(ctx context.Context, m *config.Mesh, name, op string) (*topicRow, error) {
	var t localapi.Topic
	if _, err := v.api.Do(ctx, "POST", topicPath(name, "/"+op), localapi.TopicMeshRequest{Mesh: m.Slug}, &t); err != nil {
		return nil, daemonError(err)
	}
	row := topicRowOfAPI(t)
	return &row, nil
}

func (v *viaDaemon) TopicJoin(ctx context.Context, m *config.Mesh, name string) (*topicRow, error) {
	return v.topicPost(ctx, m, name, "join")
}

func (v *viaDaemon) TopicLeave(ctx context.Context, m *config.Mesh, name string) error {
	_, err := v.api.Do(ctx, "POST", topicPath(name, "/leave"), localapi.TopicMeshRequest{Mesh: m.Slug}, nil)
	return daemonError(err)
}

func (v *viaDaemon) TopicMarkRead(ctx context.Context, m *config.Mesh, name, upTo string) error {
	_, err := v.api.Do(ctx, "POST", topicPath(name, "/read"), localapi.TopicReadRequest{Mesh: m.Slug, UpTo: upTo}, nil)
	return daemonError(err)
}

func (v *viaDaemon) TopicAdd(ctx context.Context, m *config.Mesh, name, member, role string) (*topicMemberRow, error) {
	var tm localapi.TopicMember
	if _, err := v.api.Do(ctx, "POST", topicPath(name, "/add"), localapi.TopicAddRequest{Mesh: m.Slug, Member: member, Role: role}, &tm); err != nil {
		return nil, daemonError(err)
	}
	return &topicMemberRow{Mesh: tm.Mesh, MemberID: tm.MemberID, Pubkey: tm.Pubkey, DisplayName: tm.DisplayName,
		Role: tm.Role, JoinedAt: tm.JoinedAt, HasCurrentKey: tm.HasCurrentKey}, nil
}

func (v *viaDaemon) TopicRotate(ctx context.Context, m *config.Mesh, name string) (*topicRow, error) {
	return v.topicPost(ctx, m, name, "rotate")
}

func (v *viaDaemon) TopicMembers(ctx context.Context, m *config.Mesh, name string) ([]topicMemberRow, error) {
	var list []localapi.TopicMember
	if _, err := v.api.Do(ctx, "GET", topicPath(name, "/members?mesh="+url.QueryEscape(m.Slug)), nil, &list); err != nil {
		return nil, daemonError(err)
	}
	rows := make([]topicMemberRow, 0, len(list))
	for _, tm := range list {
		rows = append(rows, topicMemberRow{Mesh: tm.Mesh, MemberID: tm.MemberID, Pubkey: tm.Pubkey, DisplayName: tm.DisplayName,
			Role: tm.Role, JoinedAt: tm.JoinedAt, HasCurrentKey: tm.HasCurrentKey})
	}
	return rows, nil
}

func (v *viaDaemon) TopicHistory(ctx context.Context, m *config.Mesh, name string, limit int, before string) (*topicPage, error) {
	q := url.Values{"mesh": {m.Slug}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if before != "" {
		q.Set("before", before)
	}
	var page localapi.TopicMessages
	if _, err := v.api.Do(ctx, "GET", topicPath(name, "/messages?"+q.Encode()), nil, &page); err != nil {
		return nil, daemonError(err)
	}
	out := &topicPage{More: page.More, WaitingForKey: page.WaitingForKey, KeyGen: page.KeyGen}
	for _, msg := range page.Messages {
		out.Lines = append(out.Lines, lineOfAPI(msg))
	}
	return out, nil
}

// TopicTail subscribes to the daemon's events before reading the history,
// so nothing falls between the two: topic_message events carry new posts
// (the member's own included), topic_key events say a key arrived and the
// history is read again.
func (v *viaDaemon) TopicTail(ctx context.Context, m *config.Mesh, name string, limit int, follow bool, sink topicSink) error {
	var stream *localapi.EventStream
	if follow {
		var err error
		if stream, err = v.api.Events(ctx, "", "mesh="+url.QueryEscape(m.Slug)); err != nil {
			return daemonError(err)
		}
		defer func() { // the stream open at the end, if any
			if stream != nil {
				stream.Close()
			}
		}()
	}
	var info localapi.Topic
	var list []localapi.Topic
	if _, err := v.api.Do(ctx, "GET", "/v1/topics?mesh="+url.QueryEscape(m.Slug), nil, &list); err != nil {
		return daemonError(err)
	}
	ref := strings.TrimPrefix(name, "#")
	for _, t := range list {
		if t.Name == ref || t.ID == ref {
			info = t
		}
	}
	if info.ID == "" {
		return &client.Error{Code: client.CodeTopicNotFound, Message: fmt.Sprintf("no topic %q in %s", ref, m.Slug)}
	}
	if !info.Joined {
		return &client.Error{Code: "not_a_member", Message: "you are not a member of #" + info.Name + "; join it with claudemesh topic join " + info.Name}
	}
	p := newTailPrinter(info.Name, info.KeyGen, sink)
	read := func() error {
		page, err := v.TopicHistory(ctx, m, info.ID, limit, "")
		if err != nil {
			return err
		}
		p.curGen = max(p.curGen, page.KeyGen)
		all, err := p.offer(reversed(page.Lines))
		p.setWaiting(!all || page.WaitingForKey)
		return err
	}
	// readSince reads, after the stream was away (a daemon restart), every
	// post after the newest one shown, page by page back to it: reading
	// the last limit posts again missed those beyond them made meanwhile.
	readSince := func() error {
		if len(p.printed) == 0 {
			return read()
		}
		var lines []topicLine // newest first
		before := ""
		for {
			page, err := v.TopicHistory(ctx, m, info.ID, wire.MaxTopicHistory, before)
			if err != nil {
				return err
			}
			p.curGen = max(p.curGen, page.KeyGen)
			reached := false
			for _, l := range page.Lines {
				if p.printed[l.ID] {
					reached = true
					break
				}
				lines = append(lines, l)
			}
			if reached || !page.More || len(page.Lines) == 0 {
				all, err := p.offer(reversed(lines))
				p.setWaiting(!all || page.WaitingForKey)
				return err
			}
			before = page.Lines[len(page.Lines)-1].ID
		}
	}
	// The mesh's connection to its broker, as the daemon says: a loss
	// while it was open is said once, and its return once (as inbox
	// --follow does), so a follower can tell "nobody posts" from "the
	// broker is gone". The state is read from the daemon at the start
	// and after a daemon restart, so a daemon connecting for the first
	// time is not taken for an outage. At the start it is read before the
	// history, with the stream already subscribed: read after it, it
	// could be that of an outage whose event waits in the stream, and
	// the outage went unsaid (Follow in daemon.go, the same).
	state, lost := "", false
	seed := func() {
		var st localapi.Status
		if _, err := v.api.Do(ctx, "GET", "/v1/status", nil, &st); err == nil {
			state = st.Meshes[m.Slug]
		}
	}
	if follow {
		seed()
	}
	if err := read(); err != nil {
		return err
	}
	if !follow {
		if p.waiting {
			return errKeyMissing(info.Name)
		}
		return nil
	}
	q := "mesh=" + url.QueryEscape(m.Slug)
	for {
		ev, err := stream.Next()
		if err != nil {
			stream.Close()
			if ctx.Err() != nil {
				return nil
			}
			// The daemon went away (a restart, a crash) or dropped a slow
			// reader: follow again, and read what passed meanwhile.
			if stream, err = v.resubscribe(ctx, "", q, func(_, msg string) { sink.Notice(errors.New(msg)) }); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			seed()
			if err := readSince(); err != nil {
				return err
			}
			continue
		}
		switch ev.Type {
		case localapi.EventBrokerStatus:
			// Kicked, removed or banned: nothing more comes; say so and
			// stop rather than go silent.
			var bs localapi.BrokerStatusEvent
			if json.Unmarshal(ev.Data, &bs) == nil && bs.Mesh == m.Slug {
				if err := meshEnded(bs); err != nil {
					return err
				}
				was := state
				state = bs.State
				switch {
				case (bs.State == localapi.MeshReconnecting || bs.State == localapi.MeshConnecting) && was == localapi.MeshOpen && !lost:
					lost = true
					sink.Connection(info.Name, m.Slug, cliui.CodeUnreachable, "mesh "+m.Slug+": the daemon lost its connection to the broker and reconnects by itself; this tail goes on, and the posts made meanwhile are shown once it is back")
				case bs.State == localapi.MeshOpen && lost:
					lost = false
					sink.Connection(info.Name, m.Slug, noticeReconnected, "mesh "+m.Slug+": the daemon is connected to the broker again")
					// Posts made while it was away came to nobody live.
					if err := readSince(); err != nil {
						return err
					}
				}
			}
		case localapi.EventTopicKey:
			var k localapi.TopicKeyEvent
			if json.Unmarshal(ev.Data, &k) == nil && k.TopicID == info.ID {
				if err := read(); err != nil {
					return err
				}
			}
		case localapi.EventTopicMessage:
			var msg localapi.TopicMessage
			if json.Unmarshal(ev.Data, &msg) != nil || msg.TopicID != info.ID || p.waiting {
				continue
			}
			if _, err := p.offer([]topicLine{lineOfAPI(msg)}); err != nil {
				return err
			}
		}
	}
}
