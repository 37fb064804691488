package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// proveSkew bounds how far the challenge's serverTime may be from this
// machine's clock: the broker's own window for a hello's timestamp, so a
// clock that passes here also passes the handshakes that follow.
const proveSkew = 60 * time.Second

// ProveBroker makes the server at brokerURL prove that it holds the broker
// key pinnedHex before the caller tells it anything: it opens a WebSocket,
// checks the first frame's challenge (01-protocol §3 step 1: the broker key
// over claudemesh/challenge/v1|<nonce>|<serverTime>) and the freshness of
// its serverTime, and closes without saying a word. Join calls it before it
// sends an invite's token, which is a bearer credential.
//
// It proves who answers at this URL now: a server that relays every byte
// to the real broker passes (as it would on any WebSocket connection), which
// wss:// stops; a server that merely copies the invite's key does not.
// A server that cannot prove the key gets CodeBrokerKeyMismatch.
func ProveBroker(ctx context.Context, brokerURL, pinnedHex string) error {
	if u, err := url.Parse(brokerURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
		return newError(wire.CodeInvalidArgument, "broker URL %q is not a ws:// or wss:// URL", brokerURL)
	}
	pinned, err := cmcrypto.ParsePublicKey(pinnedHex)
	if err != nil {
		return wrapError(wire.CodeInvalidArgument, err, "pinned broker key")
	}
	hctx, cancel := context.WithTimeout(ctx, DefaultHandshakeTimeout)
	defer cancel()
	var connected atomic.Bool
	var nd net.Dialer
	dialer := websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: DefaultHandshakeTimeout,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := nd.DialContext(ctx, network, addr)
			if err == nil {
				connected.Store(true)
			}
			return nc, err
		}}
	dialStart := time.Now()
	ws, resp, err := dialer.DialContext(hctx, brokerURL, nil)
	if err != nil {
		return dialError(hctx, brokerURL, resp, err, connected.Load(), time.Since(dialStart))
	}
	c := &Conn{ws: ws, id: MeshIdentity{BrokerURL: brokerURL}}
	defer ws.Close()
	ws.SetReadLimit(MaxBrokerFrame)
	stop := context.AfterFunc(hctx, func() { ws.NetConn().Close() })
	defer stop()
	if dl, ok := hctx.Deadline(); ok {
		ws.SetReadDeadline(dl)
	}
	raw, env, err := c.readHandshakeFrame(hctx)
	if err != nil {
		return err
	}
	notBroker := func(format string, a ...any) error {
		c.refuse()
		return newError(CodeBrokerKeyMismatch, "the server at %s is not the broker the invite names: %s; nothing was sent to it",
			brokerURL, fmt.Sprintf(format, a...))
	}
	switch env.Type {
	case wire.TypeChallenge:
	case wire.TypeError:
		return c.handshakeRefused(hctx, raw)
	default:
		return notBroker("its first frame is %q, not a signed challenge", env.Type)
	}
	var ch wire.Challenge
	if err := wire.Decode(raw, &ch); err != nil {
		return notBroker("its challenge does not decode (%v)", err)
	}
	if ch.BrokerPubkey != pinnedHex {
		return notBroker("it presents broker key %s, the invite pins %s", ch.BrokerPubkey, pinnedHex)
	}
	msg, err := cmcrypto.ChallengeString(ch.Nonce, ch.ServerTime)
	if err == nil && !wire.IsHex(ch.Nonce, 64) {
		err = errors.New("nonce is not 64 lowercase hex")
	}
	if err == nil {
		err = cmcrypto.Verify(pinned, msg, ch.Signature)
	}
	if err != nil {
		return notBroker("it did not sign its challenge with the pinned broker key (%v)", err)
	}
	if d := time.Since(time.UnixMilli(ch.ServerTime)); d > proveSkew || d < -proveSkew {
		return newError(wire.CodeTimestampSkew,
			"the broker at %s signed a challenge dated %s, %s from this machine's clock (more than %s): a replayed challenge, or this clock is wrong; nothing was sent to it",
			brokerURL, time.UnixMilli(ch.ServerTime).UTC().Format(time.RFC3339), d.Round(time.Second), proveSkew)
	}
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return nil
}
