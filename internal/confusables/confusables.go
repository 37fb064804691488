// Package confusables computes the UTS #39 skeleton of a string: two
// strings a reader could take for each other have the same skeleton.
//
// It is github.com/mtibben/confusables with its table held as sorted static
// arrays instead of a map literal: the map was built in a package init of
// every claudemesh process (about 1 ms and 200 KB before main, even for
// `claudemesh --version`), while names are compared only by a few verbs and
// the broker. The table is static data here and is searched by binary
// search, so a process that never folds a name pays nothing.
package confusables

import (
	"sort"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// Skeleton converts s to its skeleton as described in
// https://www.unicode.org/reports/tr39/#Confusable_Detection:
// NFD, each source character replaced by its target from the table, NFD
// again.
func Skeleton(s string) string {
	return norm.NFD.String(mapConfusableRunes(norm.NFD.String(s)))
}

func mapConfusableRunes(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if t, ok := lookup(r); ok {
			b.WriteString(t)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// lookup returns the table's target for r.
func lookup(r rune) (string, bool) {
	i := sort.Search(len(sources), func(i int) bool { return sources[i] >= r })
	if i < len(sources) && sources[i] == r {
		return targets[i], true
	}
	return "", false
}
