package jsonedit

import "testing"

func TestAddRemoveRestores(t *testing.T) {
	docs := []string{
		"{}",
		"{ }",
		"{\n  \"a\": 1\n}\n",
		"{\"a\":1,\"b\":{\"c\":[1,2]}}",
		"{\n\t\"x\": [],\n\t\"y\": \"z\"\n}",
	}
	for _, doc := range docs {
		data := []byte(doc)
		root := Root(data)
		added, err := AddMember(data, root, "claudemesh", []byte(`{"command": "/bin/cm", "args": ["mcp"]}`))
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(added); err != nil {
			t.Fatalf("%q → %q: %v", doc, added, err)
		}
		m, ok, err := Find(added, Root(added), "claudemesh")
		if !ok || err != nil {
			t.Fatalf("added member not found in %q", added)
		}
		back, err := RemoveMember(added, Root(added), m)
		if err != nil || string(back) != doc {
			t.Fatalf("%q → %q → %q (%v)", doc, added, back, err)
		}
	}
	for _, doc := range []string{"[]", "[ ]", "[1]", "[\n  {\"a\": 1}\n]"} {
		data := []byte(doc)
		added, err := AppendElement(data, Root(data), []byte(`{"hooks": []}`))
		if err != nil {
			t.Fatal(err)
		}
		es, _ := Elements(added, Root(added))
		back, err := RemoveElement(added, Root(added), len(es)-1)
		if err != nil || string(back) != doc {
			t.Fatalf("%q → %q → %q (%v)", doc, added, back, err)
		}
	}
	if Check([]byte(`{"a": `)) == nil || Check([]byte(`[1]`)) == nil {
		t.Fatal("bad documents must not pass")
	}
}

// Removing the only member or element leaves no blank line behind.
func TestRemoveOnlyLeavesNoBlankLine(t *testing.T) {
	data := []byte("{\n  \"s\": {\n    \"claudemesh\": {\"a\": 1}\n  },\n  \"h\": [\n    {\"b\": 2}\n  ]\n}\n")
	s, _, _ := Find(data, Root(data), "s")
	m, _, _ := Find(data, s.Value, "claudemesh")
	data, err := RemoveMember(data, s.Value, m)
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := Find(data, Root(data), "h")
	if data, err = RemoveElement(data, h.Value, 0); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"s\": {\n  },\n  \"h\": [\n  ]\n}\n"; string(data) != want {
		t.Fatalf("got %q, want %q", data, want)
	}
}
