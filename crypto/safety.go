package crypto

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
)

// SafetyNumber is what two members read to each other to check they see
// the same keys (peer verify): SHA-256 of the two pubkeys sorted bytewise,
// whose first 120 bits give six 20-bit groups, each printed as
// value mod 100000 in 5 digits. Sorting makes it the same on both sides.
func SafetyNumber(a, b PublicKey) string {
	lo, hi := a, b
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}
	h := sha256.New()
	h.Write(lo[:])
	h.Write(hi[:])
	sum := h.Sum(nil)
	groups := make([]string, 6)
	for i := range groups {
		// Each pair of groups spans 5 bytes (40 bits), big-endian.
		off := i / 2 * 5
		v := uint64(sum[off])<<32 | uint64(sum[off+1])<<24 | uint64(sum[off+2])<<16 | uint64(sum[off+3])<<8 | uint64(sum[off+4])
		if i%2 == 0 {
			v >>= 20
		}
		v &= 1<<20 - 1
		groups[i] = fmt.Sprintf("%05d", v%100000)
	}
	return strings.Join(groups, " ")
}
