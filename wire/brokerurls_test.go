package wire

import (
	"fmt"
	"strings"
	"testing"
)

func TestCheckBrokerURL(t *testing.T) {
	for _, ok := range []string{"ws://127.0.0.1:7900/ws", "wss://mesh.example.com/ws", "wss://[::1]:443/ws", "ws://h"} {
		if err := CheckBrokerURL(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	long := "wss://" + strings.Repeat("a", MaxBrokerURLLen) + "/ws"
	for _, bad := range []string{"", "http://h/ws", "https://h/ws", "ws:///ws", "ws://user:pw@h/ws", "ws://h/ws?x=1", "ws://h/ws#f",
		"ws://h/w s", "ws://h/ws\n", "ws://h/\x00", "mailto:x", "ws:h", long, "javascript:alert(1)"} {
		if err := CheckBrokerURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBrokerURLList(t *testing.T) {
	got, err := BrokerURLList("ws://a/ws", []string{"ws://b/ws", "ws://a/ws", "ws://c/ws", "ws://b/ws"})
	if err != nil || strings.Join(got, " ") != "ws://a/ws ws://b/ws ws://c/ws" {
		t.Fatalf("got %v %v: want the primary first, each once, in order", got, err)
	}
	if _, err := BrokerURLList("ws://a/ws", []string{"ws://b/ws", "http://c/ws"}); err == nil {
		t.Fatal("an http URL in the list was accepted")
	}
	var many []string
	for i := range MaxBrokerURLs {
		many = append(many, fmt.Sprintf("ws://n%d/ws", i))
	}
	if _, err := BrokerURLList(many[0], many); err != nil {
		t.Fatalf("%d URLs with the primary among them: %v", MaxBrokerURLs, err)
	}
	if _, err := BrokerURLList("ws://other/ws", many); err == nil {
		t.Fatalf("%d URLs plus another primary accepted", MaxBrokerURLs)
	}
	if _, err := BrokerURLList("ws://a/ws", append(many, "ws://n0/ws")); err == nil {
		t.Fatal("a list longer than the limit accepted, even with duplicates")
	}
	if err := CheckBrokerURLs(nil); err == nil {
		t.Fatal("an empty brokerUrls accepted")
	}
	if err := CheckBrokerURLs([]string{"ws://a/ws", "ftp://b"}); err == nil {
		t.Fatal("a bad element accepted")
	}
}
