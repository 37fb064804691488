package demo

import (
	"context"
	"fmt"
	"time"

	"claudemesh/client"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// topic is the tour's topic step: alice creates #deploys (its key made on
// her machine), bob joins and cannot read it until alice's client re-seals
// the key for him on the broker's event, then a post is read by both.
func (t *tour) topic(ctx context.Context, alice, bob *peer) error {
	t.header("A topic, #deploys, end-to-end encrypted")
	info, key, err := alice.conn.TopicCreate(ctx, client.TopicCreateOptions{Name: "deploys", Description: "release train"})
	if err != nil {
		return fmt.Errorf("creating #deploys: %w", err)
	}
	alice.keeper.Ring.Put(info.ID, 1, key)
	t.keys = append(t.keys, key[:])
	t.step("alice created #deploys: its key was made on her machine; the broker stores only a copy sealed to her")
	if err := bob.conn.TopicJoin(ctx, "deploys"); err != nil {
		return fmt.Errorf("bob joining #deploys: %w", err)
	}
	// Nothing in bob's keyring: only a member who holds the key can give
	// him one, sealed to his key and signed (the broker cannot).
	t.step("bob joined #deploys; he holds no key yet, so he cannot read it")
	for !bob.keeper.Ring.Has(info.ID, 1) {
		select {
		case <-bob.keys:
		case <-ctx.Done():
			return fmt.Errorf("bob waiting for the key of #deploys: %w", ctx.Err())
		}
	}
	if *bob.keeper.Ring.Get(info.ID, 1) != *key {
		return fmt.Errorf("bob opened a key that is not the topic's")
	}
	t.step("alice's client sealed the key for bob when the broker said he joined; bob checked the seal's signature and opened it")

	text := "deploy of v1.4 starts now — alice"
	s, err := client.SealTopicPost(t.meshID, info.ID, 1, key, []byte(text), alice.id.Member, client.SendOptions{})
	if err != nil {
		return err
	}
	t.texts = append(t.texts, text)
	t.kept = append(t.kept, s.Ciphertext) // a topic keeps its history, read or not
	t.line("ciphertext on the wire: %s…", s.Ciphertext[:24])
	ack, err := alice.conn.Send(ctx, s)
	if err != nil {
		return fmt.Errorf("posting to #deploys: %w", err)
	}
	conns := "connections"
	if *ack.Online == 1 {
		conns = "connection"
	}
	t.step("alice posted to #deploys: stored in its history before the ack, pushed live to %d %s", *ack.Online, conns)
	for _, p := range []*peer{bob, alice} {
		if err := t.readTopic(ctx, p, info.ID, text); err != nil {
			return err
		}
	}
	return nil
}

// readTopic waits for the topic post among p's pushes and opens it.
func (t *tour) readTopic(ctx context.Context, p *peer, topicID, want string) error {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case push := <-p.inbox:
			if push.Kind != wire.KindTopic {
				continue
			}
			m := client.OpenTopicPush(push, t.meshID, topicID, func(g int) *[32]byte { return p.keeper.Ring.Get(topicID, g) })
			if m.Body != want || !m.Verified {
				return fmt.Errorf("%s read %+v from #deploys", p.name, m)
			}
			t.step("%s read it from #%s, decrypted and its signature verified: %q", p.name, m.Topic, cliui.SanitizePeerText(m.Body))
			return nil
		case <-timeout:
			return fmt.Errorf("%s never got the post to #deploys", p.name)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
