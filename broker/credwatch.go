package broker

// A mesh's credentials watch: the topic SSE streams of API keys
// (rest_topics.go) wait on it, so that a revoked key's stream, or the
// stream of a key whose member was banned, removed or left, ends as the
// change is applied instead of at its next heartbeat (15 s): until then it
// was still sent every post, plaintext topics' included.
//
// It is bumped after a key's revocation is committed (before the revoker
// is answered), at every membership event the hub announces
// (memberChanged: a ban, a departure, a role change), when it drops a
// member, and when a member leaves or is removed from a topic, on this node
// and from other cluster nodes' writes (before the posts of the same log
// entry are published). A stream then checks its key, its member and its
// topic (streamAllowed). A stream takes the channel
// before it checks that its key is still valid, so a change committed
// after that check closes the channel it holds.

// credentialsWatchLocked returns the channel the next change closes.
// Caller holds ms.mu.
func (ms *meshState) credentialsWatchLocked() <-chan struct{} {
	if ms.credChanged == nil {
		ms.credChanged = make(chan struct{})
	}
	return ms.credChanged
}

// credentialsWatch is credentialsWatchLocked for a caller without ms.mu.
func (ms *meshState) credentialsWatch() <-chan struct{} {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.credentialsWatchLocked()
}

// credentialsChangedLocked wakes every watcher. Caller holds ms.mu.
func (ms *meshState) credentialsChangedLocked() {
	if ms.credChanged != nil {
		close(ms.credChanged)
		ms.credChanged = nil
	}
}
