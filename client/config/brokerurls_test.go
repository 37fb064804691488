package config

import (
	"os"
	"strings"
	"testing"
)

// TestBrokerURLs: brokerUrls round-trips and is recorded only when it
// changes; a config without it reads as today (one URL); a config whose
// list is not usable is refused like any other invalid config.
func TestBrokerURLs(t *testing.T) {
	home := t.TempDir()
	m := mesh("M1", "acme")
	if err := Update(home, func(c *Config) error { c.Upsert(m); return nil }); err != nil {
		t.Fatal(err)
	}
	c, _ := Load(home)
	if got := c.Meshes[0].URLs(); len(got) != 1 || got[0] != m.BrokerURL {
		t.Fatalf("a config without brokerUrls: %v", got)
	}
	data, _ := os.ReadFile(Path(home))
	if strings.Contains(string(data), "brokerUrls") {
		t.Fatalf("brokerUrls written for a single broker:\n%s", data)
	}

	urls, err := BrokerURLsFrom(m.BrokerURL, []string{"wss://b.example.com/ws", m.BrokerURL})
	if err != nil || strings.Join(urls, " ") != m.BrokerURL+" wss://b.example.com/ws" {
		t.Fatalf("BrokerURLsFrom: %v %v", urls, err)
	}
	if single, err := BrokerURLsFrom(m.BrokerURL, []string{m.BrokerURL}); single != nil || err != nil {
		t.Fatalf("a single broker's list: %v %v", single, err)
	}
	if _, err := BrokerURLsFrom(m.BrokerURL, []string{"http://b/ws"}); err == nil {
		t.Fatal("an http URL accepted")
	}
	if err := RecordBrokerURLs(home, "M1", urls); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(Path(home))
	if err := RecordBrokerURLs(home, "M1", urls); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(Path(home)); !st2.ModTime().Equal(st.ModTime()) || !os.SameFile(st, st2) {
		t.Fatal("an unchanged list was written again")
	}
	c, err = Load(home)
	if err != nil || strings.Join(c.Meshes[0].URLs(), " ") != strings.Join(urls, " ") {
		t.Fatalf("after recording: %v %v", c, err)
	}

	data, _ = os.ReadFile(Path(home))
	bad := strings.Replace(string(data), "wss://b.example.com/ws", "http://b.example.com/ws", 1)
	if err := os.WriteFile(Path(home), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(home); err == nil || !strings.Contains(err.Error(), "brokerUrls") {
		t.Fatalf("a config with an http brokerUrls entry: %v", err)
	}
}
