package daemon

import (
	"sync"
	"testing"

	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
)

// TestMentionsUsWhileSessionsChange: mentionsUs ranged over the daemon's
// sessions under the meshes' lock, which no writer of the sessions takes,
// so a mention that arrived while a session registered or ended was a
// data race (under -race) and could end the daemon with "concurrent map
// iteration and map write". It reads them under sessMu now.
func TestMentionsUsWhileSessionsChange(t *testing.T) {
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{sessions: map[string]*sessionRT{}}
	m := &meshRT{d: d, key: key, cfg: config.Mesh{MeshID: "m1"}}
	other := cmcrypto.RandomHex32()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			h := cmcrypto.RandomHex32()
			d.sessMu.Lock()
			d.sessions[h] = &sessionRT{rec: sessionRecord{MeshID: "m1", Pubkey: cmcrypto.RandomHex32()}}
			if len(d.sessions) > 8 {
				for k := range d.sessions {
					delete(d.sessions, k)
					break
				}
			}
			d.sessMu.Unlock()
		}
	}()
	for range 2000 {
		if m.mentionsUs([]string{other}) {
			t.Fatal("a post that mentions only someone else was marked as mentioning us")
		}
	}
	close(stop)
	wg.Wait()
	sess := cmcrypto.RandomHex32()
	d.sessions["x"] = &sessionRT{rec: sessionRecord{MeshID: "m1", Pubkey: sess}}
	if !m.mentionsUs([]string{sess}) || !m.mentionsUs([]string{key.PublicHex()}) {
		t.Fatal("a post that mentions this member or its session was not marked")
	}
}
