package broker

import (
	"strings"
	"testing"

	cmcrypto "claudemesh/crypto"
)

// TestMeshSlugFromAnAccentedOrSymbolName (a new user's trial): a slug
// made from "Ünïcode 🚀 team" dropped the accented letters (n-code-team),
// and a name with no letter at all was refused with the slug's regular
// expression. Accents fold to their letter; a name that gives no slug
// says so and what to give.
func TestMeshSlugFromAnAccentedOrSymbolName(t *testing.T) {
	b := startWith(t, testConfig(t))
	key, _ := cmcrypto.GenerateIdentity()
	st, body := postJSON(t, b.HTTPURL()+"/v1/admin/meshes", b.OperatorToken(), map[string]string{
		"name": "Ünïcode 🚀 team", "ownerPubkey": key.PublicHex(), "ownerDisplayName": "uli"})
	if st != 201 || body["slug"] != "unicode-team" {
		t.Fatalf("create from an accented name: %d %v, want slug unicode-team", st, body)
	}
	st, body = postJSON(t, b.HTTPURL()+"/v1/admin/meshes", b.OperatorToken(), map[string]string{
		"name": "🚀🚀", "ownerPubkey": key.PublicHex(), "ownerDisplayName": "uli"})
	msg, _ := body["error"].(map[string]any)["message"].(string)
	if st != 400 || !strings.Contains(msg, `no slug can be made from the name "🚀🚀"`) || strings.Contains(msg, "^[") {
		t.Fatalf("create from a name without letters: %d %v", st, body)
	}
}
