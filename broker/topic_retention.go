package broker

import (
	"strings"
	"time"

	"claudemesh/internal/cliui"
	"claudemesh/store"
)

// topicRetentionFlag parses --topic-retention: "keep" (the default) or a
// duration (Go syntax or <n>d).
func topicRetentionFlag(v string) (time.Duration, error) {
	if v == "" || strings.EqualFold(v, "keep") {
		return 0, nil
	}
	d, err := cliui.ParseDuration(v)
	if err != nil {
		return 0, cliui.UsageErrorf("--topic-retention: %v (a duration such as 30d, or keep)", err)
	}
	if d <= 0 {
		return 0, cliui.UsageErrorf("--topic-retention must be positive, or keep")
	}
	return d, nil
}

// topicRetention deletes topic posts older than --topic-retention, in small
// transactions so a large purge never holds the committer for long. With
// the default (keep) it does nothing.
func (b *Broker) topicRetention(stop <-chan struct{}) {
	keep := b.cfg.TopicRetention
	if keep <= 0 {
		return
	}
	t := time.NewTicker(clamp(keep/10, 50*time.Millisecond, time.Hour))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			b.purgeTopics(now.Add(-keep).UnixMilli())
		}
	}
}

// purgeTopics deletes every topic post made before cutoff (Unix ms).
func (b *Broker) purgeTopics(cutoff int64) {
	for _, ms := range b.hub.meshList() {
		var topics []store.Topic
		if err := b.store.View(func(tx *store.Tx) error {
			var err error
			topics, err = store.ListTopics(tx, ms.id)
			return err
		}); err != nil {
			b.log.Error("topic retention", "err", err)
			continue
		}
		for _, t := range topics {
			for more := true; more; {
				err := b.store.Update(func(tx *store.Tx) error {
					var err error
					_, more, err = store.PurgeTopicPosts(tx, ms.id, t.ID, cutoff, 1000)
					return err
				})
				if err != nil {
					b.log.Error("topic retention", "topic", t.ID, "err", err)
					break
				}
			}
		}
	}
}
