package cliui

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type row struct {
	ID     string   `json:"id"`
	Groups []string `json:"groups"`
	Body   string   `json:"body,omitzero"`
}

func TestJSONStampsSchemaVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"object", row{ID: "a"}, `{"schemaVersion":1,"id":"a","groups":[]}`},
		{"pointer", &row{ID: "a", Groups: []string{"x"}}, `{"schemaVersion":1,"id":"a","groups":["x"]}`},
		{"array", []row{{ID: "a"}, {ID: "b"}}, `[{"schemaVersion":1,"id":"a","groups":[]},{"schemaVersion":1,"id":"b","groups":[]}]`},
		{"nil slice", []row(nil), `[]`},
		{"empty slice", []row{}, `[]`},
		{"empty object", struct{}{}, `{"schemaVersion":1}`},
		{"map sorted", map[string]int{"b": 2, "a": 1}, `{"schemaVersion":1,"a":1,"b":2}`},
		{"already stamped", map[string]int{"schemaVersion": 1, "x": 2}, `{"schemaVersion":1,"x":2}`},
		{"nested not stamped", map[string]any{"ok": true, "target": map[string]string{"kind": "box"}}, `{"schemaVersion":1,"ok":true,"target":{"kind":"box"}}`},
		{"array of strings", []string{"a"}, `["a"]`},
		{"invalid utf8", row{ID: "a\xffb"}, `{"schemaVersion":1,"id":"a` + "\ufffd" + `b","groups":[]}`},
		{"escapes", row{ID: "\x1b[31m<b>"}, `{"schemaVersion":1,"id":"\u001b[31m\u003cb\u003e","groups":[]}`}, // markup too: agents read it
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := NewOut(&out, nil, true, false, false).JSON(tc.v); err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSuffix(out.String(), "\n"); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestNDJSON(t *testing.T) {
	var out bytes.Buffer
	o := NewOut(&out, nil, true, false, false)
	if err := o.NDJSON([]row{{ID: "a"}, {ID: "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := o.NDJSON(row{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := o.NDJSON([]row(nil)); err != nil {
		t.Fatal(err)
	}
	want := `{"schemaVersion":1,"id":"a","groups":[]}` + "\n" +
		`{"schemaVersion":1,"id":"b","groups":[]}` + "\n" +
		`{"schemaVersion":1,"id":"c","groups":[]}` + "\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}

func TestHumanLines(t *testing.T) {
	var out, errb bytes.Buffer
	o := NewOut(&out, &errb, false, false, false)
	o.Linef("hello %s", "bob")
	o.Resultf("two\nlines\n")
	o.Warn("daemon unreachable", "start it with claudemesh daemon up")
	if got, want := out.String(), "  hello bob\n  two\n  lines\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got, want := errb.String(), "  ⚠ daemon unreachable\n  → start it with claudemesh daemon up\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}

	out.Reset()
	quiet := NewOut(&out, &errb, false, true, false)
	quiet.Linef("chatter")
	quiet.Resultf("essential")
	if out.String() != "  essential\n" {
		t.Errorf("quiet stdout %q", out.String())
	}

	out.Reset()
	errb.Reset()
	j := NewOut(&out, &errb, true, false, false)
	j.Linef("x")
	j.Resultf("y")
	j.Warn("z", "")
	if out.Len() != 0 || errb.Len() != 0 {
		t.Errorf("--json mode printed human output: %q %q", out.String(), errb.String())
	}
}

func TestSanitizePeerText(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "hello, wörld ✓", "hello, wörld ✓"},
		{"newline and tab kept", "a\n\tb", "a\n\tb"},
		{"osc52 clipboard bel", "copy \x1b]52;c;cm0gLXJmIH4=\x07this", "copy this"},
		{"osc52 clipboard st", "x\x1b]52;c;cm0gLXJmIH4=\x1b\\y", "xy"},
		{"osc title", "\x1b]0;pwned\x07ok", "ok"},
		{"csi colour", "\x1b[31;1mred\x1b[0m text", "red text"},
		{"csi clear screen", "\x1b[2J\x1b[Hhi", "hi"},
		{"c1 csi", "\u009b31mred", "red"},
		{"c1 osc", "\u009d52;c;eA==\u009cok", "ok"},
		{"two byte escape", "\x1bcreset", "reset"},
		{"charset escape", "\x1b(Babc", "abc"},
		{"bell backspace cr del", "a\x07b\x08c\rd\x7fe", "abcde"},
		{"nul", "a\x00b", "ab"},
		{"c1 range", "a\u0085b\u009fc", "abc"},
		{"bidi override", "abc\u202edcba\u202c", "abcdcba"},
		{"invalid utf8", "a\xffb", "a\ufffdb"},
		{"unterminated osc keeps text", "\x1b]not closed", "not closed"},
		{"lone esc at end", "end\x1b", "end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SanitizePeerText(tc.in)
			if got != tc.want {
				t.Fatalf("SanitizePeerText(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for _, r := range got {
				if isControl(r) && r != '\n' && r != '\t' {
					t.Fatalf("control %U left in %q", r, got)
				}
			}
		})
	}
}

func FuzzSanitizePeerText(f *testing.F) {
	for _, s := range []string{"hi", "\x1b]52;c;x\x07", "\x1b[31m", "\u009b1m", "a\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := SanitizePeerText(s)
		for _, r := range got {
			if (isControl(r) && r != '\n' && r != '\t') || isBidiControl(r) {
				t.Fatalf("control %U left in %q (from %q)", r, got, s)
			}
		}
		if SanitizePeerText(got) != got {
			t.Fatalf("not idempotent on %q", s)
		}
	})
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, "0d": 0, "30s": 30 * time.Second, "1h30m": 90 * time.Minute, "200ms": 200 * time.Millisecond,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "+1d", "7 d", "seven", "99999999999d", "1d2h"} {
		_, err := ParseDuration(in)
		if err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
			continue
		}
		if e, ok := err.(*Error); !ok || ExitCode(e.Code) != ExitUsage {
			t.Errorf("ParseDuration(%q) error %v is not a usage-class *Error", in, err)
		}
	}
}

func TestSpinner(t *testing.T) {
	var buf bytes.Buffer
	s := NewSpinner(&buf, "working") // not a terminal: inert
	s.Update("still working")
	s.Stop()
	if buf.Len() != 0 {
		t.Fatalf("inert spinner wrote %q", buf.String())
	}

	s = startSpinner(&buf, "catching up", true, time.Hour)
	s.Update("caught up")
	s.Stop()
	s.Stop() // idempotent
	got := buf.String()
	if !strings.Contains(got, "catching up") || !strings.HasSuffix(got, "\r\x1b[K") {
		t.Fatalf("spinner output %q", got)
	}

	var out bytes.Buffer
	if sp := NewOut(&out, &out, false, false, true).Spinner("x"); sp.stop != nil {
		t.Fatal("Out.Spinner drew on a non-terminal")
	}
}
