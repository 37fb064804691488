package bench

import (
	"debug/buildinfo"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"testing"
)

// TestBuiltWithRaceAsDebugBuildinfo: builtWithRace reads this test binary
// (built with -race or not, as the tests are) as debug/buildinfo does, and
// says no for a file that is not a Go executable or is not there.
func TestBuiltWithRaceAsDebugBuildinfo(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.ContainsFunc(bi.Settings, func(s debug.BuildSetting) bool { return s.Key == "-race" && s.Value == "true" })
	if got := builtWithRace(exe); got != want {
		t.Fatalf("builtWithRace(%s) = %v, debug/buildinfo says -race %v", exe, got, want)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	mod, ok := embeddedModInfo(data)
	if want := bi.String()[len("go\t"+bi.GoVersion+"\n"):]; !ok || mod != want {
		t.Fatalf("module information (%v):\n%s\ndebug/buildinfo's:\n%s", ok, mod, want)
	}
	dir := t.TempDir()
	notGo := filepath.Join(dir, "script")
	if err := os.WriteFile(notGo, []byte("#!/bin/sh\n# \xff Go buildinf: build\t-race=true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{notGo, filepath.Join(dir, "missing")} {
		if builtWithRace(path) {
			t.Errorf("builtWithRace(%s) = true", path)
		}
	}
}

// TestEmbeddedModInfoRace: a header whose module information has
// "build	-race=true" is -race; one with -race=false or none, a cut one, or
// one that is not 16-byte aligned is not.
func TestEmbeddedModInfoRace(t *testing.T) {
	const start, end = "0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6", "\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2"
	blob := func(mod string, cut int) []byte {
		b := make([]byte, 48) // what precedes the aligned header
		b = append(b, "\xff Go buildinf:\x08\x02"...)
		b = append(b, make([]byte, 16)...)
		b = binary.AppendUvarint(b, uint64(len("go1.26.0")))
		b = append(b, "go1.26.0"...)
		m := start + mod + end
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
		return b[:len(b)-cut]
	}
	race := "path\tclaudemesh\nmod\tclaudemesh\t(devel)\t\nbuild\t-buildmode=exe\nbuild\t-race=true\nbuild\tCGO_ENABLED=1\n" +
		"build\tGOARCH=amd64\nbuild\tGOOS=linux\nbuild\tGOAMD64=v1\nbuild\tvcs=git\n"
	for _, tc := range []struct {
		name string
		data []byte
		race bool
	}{
		{"-race", blob(race, 0), true},
		{"-race=false", blob("path\tclaudemesh\nbuild\t-race=false\n", 0), false},
		{"no -race", blob("path\tclaudemesh\nbuild\tCGO_ENABLED=0\n", 0), false},
		{"cut", blob(race, 5), false},
		{"not aligned", append([]byte("x"), blob(race, 0)...), false},
	} {
		mod, ok := embeddedModInfo(tc.data)
		if got := ok && hasRace(mod); got != tc.race {
			t.Errorf("%s: -race %v, want %v (module information %v %q)", tc.name, got, tc.race, ok, mod)
		}
	}
}
