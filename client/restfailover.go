package client

import (
	"context"
	"errors"
	"net/http"

	"claudemesh/wire"
)

// Fail-over for REST requests that may go to any node of a clustered
// broker (a join, whose invite lists the cluster's URLs). The policy
// follows the WebSocket dial's (failover.go): one pass over the URLs in
// order, no wait between them, each URL but the last bounded by
// failoverHandshakeTimeout so a node whose machine vanished costs seconds,
// not the caller's whole deadline; after a pass in which a node asked to
// retry later (Retry-After), wait that long and make another pass.
//
// A request goes on to the next URL only when its node could not have
// acted on it or when acting twice is harmless:
//   - nothing was sent (the connection was refused or never opened), or
//   - the request is idempotent (a join: the broker answers a re-join of
//     the same key with the same member and consumes no invite use) and
//     the node did not answer, answered "unavailable" (no quorum), "rate
//     limited", or a proxy's 502/503/504.
//
// Any other answer (the invite is revoked, the name is taken, a bad
// signature) would be the same on every node of the cluster and is
// returned as it is.

// restNextURL reports whether a REST attempt that failed with err should
// be tried at the next URL.
func restNextURL(err error, idempotent bool) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Code == CodeUnreachable && isUnreachable(e.cause) {
		return true
	}
	if !idempotent {
		return false
	}
	switch e.Code {
	case CodeUnreachable, CodeTimeout, CodeConnectionClosed, wire.CodeUnavailable, wire.CodeRateLimited:
		return true
	}
	switch e.Status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// postJSONAny posts in to path at each of urls in turn (see above) and
// decodes the first answer into out; it returns the URL that answered.
// When every URL failed, the error is the one that says most (passError),
// naming every URL's failure.
func postJSONAny(ctx context.Context, urls []string, path, bearer string, in, out any, idempotent bool) (string, error) {
	for attempt := 0; ; attempt++ {
		u, err := postPass(ctx, urls, path, bearer, in, out, idempotent, nil)
		if err == nil || !waitRetryAfter(ctx, err, attempt) {
			return u, err
		}
	}
}

// postPass is one pass of postJSONAny. A non-nil prove is asked first
// about each URL: a URL it fails gets nothing posted, and the pass goes on
// to the next one (as after a node that could not have acted).
func postPass(ctx context.Context, urls []string, path, bearer string, in, out any, idempotent bool,
	prove func(context.Context, string) error) (string, error) {
	var errs []error
	for i, u := range urls {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if i < len(urls)-1 {
			actx, cancel = context.WithTimeout(ctx, failoverHandshakeTimeout)
		}
		var err error
		if prove != nil {
			if err = prove(actx, u); err != nil {
				cancel()
				if ctx.Err() != nil {
					return "", err
				}
				errs = append(errs, err)
				continue
			}
		}
		err = doJSON(actx, http.MethodPost, RESTBase(u)+path, bearer, in, out)
		cancel()
		if err == nil {
			return u, nil
		}
		if ctx.Err() != nil || len(urls) == 1 || !restNextURL(err, idempotent) {
			return "", err
		}
		errs = append(errs, err)
	}
	return "", passError(urls, errs)
}
