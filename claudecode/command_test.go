package claudecode

import "testing"

// TestCommand: Command builds each of Commands by its name, afresh, and
// nothing else.
func TestCommand(t *testing.T) {
	for _, c := range Commands() {
		got := Command(c.Name)
		if got == nil || got.Name != c.Name || got == c {
			t.Errorf("Command(%q) = %v", c.Name, got)
		}
	}
	if c := Command("skill"); c != nil {
		t.Errorf("Command(skill) = %q", c.Name)
	}
}
