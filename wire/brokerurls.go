package wire

import (
	"fmt"
	"net/url"
	"strings"
)

// A cluster's public URLs travel as `brokerUrls` (mesh creation and join
// responses, hello_ack, invite tokens) and are stored per mesh in the
// client's config. They come from the network, an invite included, so the
// list is bounded: at most MaxBrokerURLs URLs of at most MaxBrokerURLLen
// bytes each (16 × 256 B keeps the longest invite token under its 8 KiB
// limit).
const (
	MaxBrokerURLs   = 16
	MaxBrokerURLLen = 256
)

// CheckBrokerURL accepts a ws:// or wss:// URL with a host and no user
// info, query or fragment, of at most MaxBrokerURLLen bytes, without
// spaces or control characters.
func CheckBrokerURL(s string) error {
	if s == "" {
		return fmt.Errorf("empty broker URL")
	}
	if len(s) > MaxBrokerURLLen {
		return fmt.Errorf("broker URL of %d bytes (the limit is %d)", len(s), MaxBrokerURLLen)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("broker URL %q contains a space or a control character", s)
		}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("broker URL %q is not a ws:// or wss:// URL", s)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("broker URL %q must not have user info, a query or a fragment", s)
	}
	return nil
}

// CheckBrokerURLs checks a brokerUrls list as received: 1 to MaxBrokerURLs
// valid URLs. Duplicates are allowed (BrokerURLList drops them).
func CheckBrokerURLs(urls []string) error {
	if len(urls) == 0 {
		return fmt.Errorf("empty brokerUrls")
	}
	if len(urls) > MaxBrokerURLs {
		return fmt.Errorf("%d broker URLs (the limit is %d)", len(urls), MaxBrokerURLs)
	}
	for _, u := range urls {
		if err := CheckBrokerURL(u); err != nil {
			return err
		}
	}
	return nil
}

// BrokerURLList is the ordered list of URLs a mesh is reached at: primary
// (the mesh's brokerUrl) first, then the others of list in their order,
// each once. The primary is not checked here (an invite's signed brokerUrl
// may be an https:// URL, checked where it is used); every other entry
// must pass CheckBrokerURL, and the result holds at most MaxBrokerURLs.
func BrokerURLList(primary string, list []string) ([]string, error) {
	if len(list) > MaxBrokerURLs {
		return nil, fmt.Errorf("%d broker URLs (the limit is %d)", len(list), MaxBrokerURLs)
	}
	out := make([]string, 0, len(list)+1)
	if primary != "" {
		out = append(out, primary)
	}
	for _, u := range list {
		if err := CheckBrokerURL(u); err != nil {
			return nil, err
		}
		dup := false
		for _, have := range out {
			if have == u {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, u)
		}
	}
	if len(out) > MaxBrokerURLs {
		return nil, fmt.Errorf("%d broker URLs (the limit is %d)", len(out), MaxBrokerURLs)
	}
	return out, nil
}
