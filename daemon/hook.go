package daemon

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"claudemesh/daemon/localapi"
	"claudemesh/internal/agentview"
	"claudemesh/wire"
)

// maxHookMessages bounds what one prompt gets as additional context.
const maxHookMessages = 50

// handleHook serves `claudemesh hook` (Claude Code's UserPromptSubmit and
// Stop hooks) in one round trip, since it runs before every prompt: find
// the session, set its status (which drives priority holding on the
// broker: next/low DMs wait while it is working), and for `working` hand
// back its unread messages, marked seen for it.
func (d *Daemon) handleHook(w http.ResponseWriter, r *http.Request) {
	var req localapi.HookRequest
	if !readJSON(w, r, &req) {
		return
	}
	switch req.Event {
	case wire.StatusWorking, wire.StatusIdle, wire.StatusDND:
	default:
		writeError(w, badRequest(wire.CodeInvalidArgument, "event must be working, idle or dnd"))
		return
	}
	s := d.hookSession(req)
	if s == nil {
		writeError(w, &apiError{status: 404, code: "no_session", msg: "no registered session matches this hook"})
		return
	}
	resp := localapi.HookResponse{Session: s.api(), Messages: []localapi.InboxRow{}}
	if c := s.conn(); c != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		if err := c.SetStatus(ctx, req.Event); err != nil {
			resp.StatusError = err.Error()
		} else {
			s.recordProfile(func(rec *sessionRecord) { rec.Status, rec.StatusAt = req.Event, time.Now().UnixMilli() })
		}
		cancel()
	} else {
		resp.StatusError = "the session is not connected"
	}
	if req.Event == wire.StatusWorking {
		rows, err := d.listInbox("", 0, true, maxHookMessages, s.scope())
		if err != nil {
			writeError(w, internalError(err))
			return
		}
		slices.Reverse(rows) // oldest first
		api := make([]localapi.InboxRow, len(rows))
		for i, row := range rows {
			api[i] = row.api()
		}
		// Only what fits in the context is handed over and marked seen:
		// the rest waits for the next prompt.
		text, n := agentview.HookContext(api, 0, agentview.DefaultHookBudget)
		resp.Context = text
		ids := make([]string, 0, n)
		for i := range n {
			resp.Messages = append(resp.Messages, api[i])
			ids = append(ids, strconv.FormatUint(rows[i].Seq, 10))
		}
		if len(ids) > 0 {
			if _, err := d.markSeen(ids, s.scope()); err != nil {
				writeError(w, internalError(err))
				return
			}
		}
	}
	writeJSON(w, 200, resp)
}

// hookSession finds the session a hook runs for: by session id, else by
// the nearest registered ancestor process.
func (d *Daemon) hookSession(req localapi.HookRequest) *sessionRT {
	list := d.sessionList()
	if req.SessionID != "" {
		for _, s := range list {
			if s.rec.SessionID == req.SessionID {
				return s
			}
		}
	}
	for _, pid := range req.PIDs {
		for _, s := range list {
			if s.rec.Process.PID == pid {
				return s
			}
		}
	}
	return nil
}
