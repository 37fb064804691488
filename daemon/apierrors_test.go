package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"claudemesh/daemon/localapi"
)

// TestAPIErrorsSayWhatIsWrong (a new user's trial): a body field of the
// wrong type was answered with the decoder's Go words ("json: cannot
// unmarshal JSON number into Go string within \"/message\"", after
// "ill-shaped frame"), and a bad query parameter of the chat page's routes
// with one sentence about every parameter. Each names the field or
// parameter, what it holds and what it takes.
func TestAPIErrorsSayWhatIsWrong(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPair(t)
	ctx := context.Background()
	// A reply to a message id, and to a message of ours by the id we
	// gave it, is taken.
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "first", ClientMessageID: "my-first"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"01J0000000000000000000000R", "my-first"} {
		if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "a reply", ReplyToID: id}); err != nil {
			t.Fatalf("a reply to %s: %v", id, err)
		}
	}
	for _, c := range []struct {
		method, path, body string
		want               string
	}{
		{"POST", "/v1/send", `{"to":"*","message":5}`, `the request body: "message" must be a string, not a number`},
		{"POST", "/v1/send", `{"to":"*","message":"x","priority":["now"]}`, `the request body: "priority" must be a string, not an array`},
		{"POST", "/v1/inbox/seen", `{"ids":[1]}`, `the request body: "ids[0]" must be a string, not a number`},
		{"POST", "/v1/topics", `{"name":"x","private":"yes"}`, `the request body: "private" must be true or false, not a string`},
		{"POST", "/v1/send", `["x"]`, `the request body must be a JSON object`},
		{"GET", "/v1/web/thread?thread=*&before=nonsense", "", `the query parameter before="nonsense" is not valid: it is the before cursor of an earlier page`},
		{"GET", "/v1/web/thread?thread=*&limit=many", "", `the query parameter limit="many" is not valid: it is a whole number (0: 50, at most 500)`},
		{"GET", "/v1/web/thread", "", `the query parameter thread is required`},
		{"GET", "/v1/web/search?q=", "", `the query parameter q is required: it is the text to search for, 1 to 200 bytes`},
		{"GET", "/v1/inbox?limit=-1", "", `the query parameter limit="-1" is not valid: it is a whole number (0 or more; 0: no limit)`},
		{"GET", "/v1/inbox?unreadOnly=maybe", "", `the query parameter unreadOnly="maybe" is not valid: it is true or false`},
		// replyToId took any string: the readers' copy said "in reply to"
		// nothing that exists.
		{"POST", "/v1/send", `{"to":"bob","message":"x","replyToId":"hello"}`, `replyToId "hello" is not a message id: it is the messageId of the message this answers`},
		{"POST", "/v1/send", `{"to":"bob","message":"x","replyToId":"hello world"}`, `replyToId "hello world" is not a message id`},
	} {
		var in any
		if c.body != "" {
			in = jsontext.Value(c.body)
		}
		_, err := alice.api.Do(ctx, c.method, c.path, in, nil)
		var aerr *localapi.APIError
		if !asAPIError(err, &aerr) || aerr.HTTPStatus != 400 || !strings.HasPrefix(aerr.Body.Message, c.want) ||
			strings.Contains(aerr.Body.Message, "Go ") || strings.Contains(aerr.Body.Message, "frame") {
			t.Errorf("%s %s %s: %v, want 400 %q", c.method, c.path, c.body, err, c.want)
		}
	}
}
