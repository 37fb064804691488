package mcp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The SDK's stdio transport ends the session on the first line that is not
// a JSON-RPC message (its reader stops at the first decoding error), so a
// wrapper or proxy that writes one stray line to the pipe cut the session's
// push channel. JSON-RPC 2.0 answers such a line with an error (-32700 for
// text that is not JSON, -32600 for JSON that is not a request) and goes
// on: stdinFilter reads stdin line by line (MCP's stdio framing: one
// message per line, no embedded newlines), answers the bad lines itself and
// hands the good ones to the SDK through a pipe.

// maxLineBytes bounds one line, as the SDK's own transport does.
const maxLineBytes = sdk.DefaultMaxLineLength

// lockedWriter makes each Write one uninterrupted line on stdout: the SDK
// writes a whole message per Write call under its own lock, and the
// filter's error answers take this lock too, so the two never interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.WriteCloser
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	msg := withErrorCode(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

// withErrorCode gives an error answer that has code 0 a JSON-RPC code:
// the SDK answers an error its handlers return as a plain Go error (a
// second initialize, say) with code 0, which JSON-RPC 2.0 does not define.
// A repeated handshake message is an invalid request (-32600); any other
// is an internal error (-32603).
func withErrorCode(p []byte) []byte {
	if !bytes.Contains(p, []byte(`"error"`)) || !bytes.Contains(p, []byte(`"code":0`)) {
		return p
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(p, &m) != nil {
		return p
	}
	var e map[string]json.RawMessage
	if json.Unmarshal(m["error"], &e) != nil || string(e["code"]) != "0" {
		return p
	}
	var text string
	json.Unmarshal(e["message"], &text)
	code := jsonrpc.CodeInternalError
	if bytes.HasPrefix([]byte(text), []byte("duplicate ")) {
		code = jsonrpc.CodeInvalidRequest
	}
	e["code"], _ = json.Marshal(code)
	m["error"], _ = json.Marshal(e)
	out, err := json.Marshal(m)
	if err != nil {
		return p
	}
	if bytes.HasSuffix(p, []byte("\n")) {
		out = append(out, '\n')
	}
	return out
}

func (l *lockedWriter) Close() error { return l.w.Close() }

// filteredReader is what the SDK reads: the pipe the filter writes; closing
// it closes stdin too.
type filteredReader struct {
	*io.PipeReader
	in io.Closer
}

func (r filteredReader) Close() error {
	r.PipeReader.Close()
	return r.in.Close()
}

// filterStdin starts the filter over in and returns the reader for the
// SDK's transport. Bad lines are answered on out and logged.
func filterStdin(in io.ReadCloser, out io.Writer, log *slog.Logger) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(filterLines(in, pw, out, log, maxLineBytes)) }()
	return filteredReader{PipeReader: pr, in: in}
}

// filterLines copies every line of in that is a JSON-RPC message (or
// batch) to good, answers every other non-blank line on out, and returns
// at the end of in (nil at EOF) or when good is closed.
func filterLines(in io.Reader, good io.Writer, out io.Writer, log *slog.Logger, max int) error {
	br := bufio.NewReaderSize(in, 64<<10)
	var line []byte
	for {
		line = line[:0]
		tooLong := false
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			if !tooLong {
				if len(line)+len(chunk) > max {
					tooLong, line = true, line[:0]
				} else {
					line = append(line, chunk...)
				}
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		msg := bytes.TrimSpace(line)
		switch {
		case tooLong:
			answerError(out, log, nil, jsonrpc.CodeParseError, "Parse error: a line is longer than the limit of 16 MiB")
		case len(msg) == 0:
		default:
			if code, text, id := checkMessage(msg); code != 0 {
				answerError(out, log, id, code, text)
			} else if _, werr := good.Write(append(msg, '\n')); werr != nil {
				return nil // the SDK closed its end: the session is over
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}

// checkMessage says whether msg is a JSON-RPC message or a non-empty batch
// of them; if not, it returns the error code and text, and the id to
// answer (the message's own when it has a usable one, else null).
func checkMessage(msg []byte) (code int, text string, id json.RawMessage) {
	if !json.Valid(msg) {
		return jsonrpc.CodeParseError, "Parse error: the line is not JSON", nil
	}
	if msg[0] == '[' {
		var batch []json.RawMessage
		if json.Unmarshal(msg, &batch) != nil || len(batch) == 0 {
			return jsonrpc.CodeInvalidRequest, "Invalid Request: an empty or malformed batch", nil
		}
		for _, m := range batch {
			if _, err := jsonrpc.DecodeMessage(m); err != nil {
				return jsonrpc.CodeInvalidRequest, "Invalid Request: a batch holds something that is not a JSON-RPC 2.0 message", nil
			}
		}
		return 0, "", nil
	}
	if _, err := jsonrpc.DecodeMessage(msg); err != nil {
		var probe struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(msg, &probe) == nil && len(probe.ID) > 0 && (probe.ID[0] == '"' || probe.ID[0] == '-' || (probe.ID[0] >= '0' && probe.ID[0] <= '9')) {
			id = probe.ID
		}
		return jsonrpc.CodeInvalidRequest, "Invalid Request: not a JSON-RPC 2.0 message", id
	}
	return 0, "", nil
}

// answerError writes one JSON-RPC error response (id null unless given).
func answerError(out io.Writer, log *slog.Logger, id json.RawMessage, code int, text string) {
	if id == nil {
		id = json.RawMessage("null")
	}
	resp, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   jsonrpc.Error   `json:"error"`
	}{"2.0", id, jsonrpc.Error{Code: int64(code), Message: text}})
	log.Warn("ignored a line on stdin that is not a JSON-RPC message", "code", code, "error", text)
	out.Write(append(resp, '\n'))
}
