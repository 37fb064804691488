package cliui

import "testing"

func TestWidth(t *testing.T) {
	for s, want := range map[string]int{
		"abc": 3, "日本語": 6, "ｱｲ": 2, "Ａ": 2, "é": 1, "e\u0301": 1, "🚀x": 3,
		"\x1b[2mdim\x1b[0m": 3, "a\u200bb": 2, "": 0,
	} {
		if got := Width(s); got != want {
			t.Errorf("Width(%q) = %d, want %d", s, got, want)
		}
	}
}
