package daemon

import (
	"context"
	"testing"
	"time"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
)

// A mesh whose presence opens before start has stored it: onState's
// refreshBlocked found no connection and read nothing, and nothing read
// the blocked members again until the next reconnect, so a blocked
// member's DMs were stored as new and counted in its share. The test
// holds the store until that refresh has gone by; the blocked members are
// read all the same.
func TestBlockedMembersAreReadWhenThePresenceOpensBeforeItIsStored(t *testing.T) {
	e := newEnv(t)
	alice := e.meshes["alice"]
	bob := e.join("bob")
	ctx := context.Background()
	key, err := cmcrypto.ParseSecretKey(bob.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, client.MeshIdentity{MeshID: bob.MeshID, MemberID: bob.MemberID, BrokerURL: bob.BrokerURL, BrokerPubkey: bob.BrokerPubkey, Member: key}, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	none := []string{}
	if _, err := c.GrantsSet(ctx, map[string]*[]string{alice.Pubkey: &none}); err != nil {
		t.Fatal(err)
	}
	c.Close()

	skipped := make(chan struct{}, 16)
	opts := Options{}
	opts.testBlockedSkipped = func() { skipped <- struct{}{} }
	opts.testPresenceStarted = func() {
		// Until onState(open)'s refresh found no presence stored.
		select {
		case <-skipped:
		case <-time.After(20 * time.Second):
		}
	}
	rd := e.daemonWith("bob", opts)
	rd.waitOpen(t)
	m := rd.mesh(t)
	waitFor(t, 10*time.Second, "alice read as blocked", func() bool { return m.isBlocked(alice.Pubkey) })
}
