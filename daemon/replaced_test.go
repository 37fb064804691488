package daemon

import (
	"strings"
	"testing"
)

// TestReplacedAdviceKeepsTheSharedMember: the advice for a daemon whose
// connection another one with the same keys took over (a copied home)
// never tells the user to run `mesh leave` there: the broker would remove
// the member both homes share, closing the original's daemon and dropping
// what is queued for it.
func TestReplacedAdviceKeepsTheSharedMember(t *testing.T) {
	e := replacedProblem("acme", "claudemesh", `another connection with this identity connected from host "laptop" (address 10.0.0.2) and took over: bye`)
	if strings.Contains(e.Hint, "mesh leave acme") || strings.Contains(e.Hint, "in the copy, claudemesh mesh leave") {
		t.Errorf("the advice runs mesh leave in a copied home: %s", e.Hint)
	}
	if !strings.Contains(e.Hint, "do not run mesh leave in the copy") || !strings.Contains(e.Hint, "join LINK") {
		t.Errorf("the advice does not say how to give a copy its own identity: %s", e.Hint)
	}
	if !strings.Contains(e.Message, `from host "laptop" (address 10.0.0.2)`) {
		t.Errorf("the message does not name the other connection: %s", e.Message)
	}
}
