package proc

import (
	"os"
	"os/exec"
	"testing"
)

func TestIdentity(t *testing.T) {
	me, err := Of(os.Getpid())
	if err != nil || !me.Alive() {
		t.Fatalf("own process: %+v %v", me, err)
	}
	if (Identity{PID: me.PID, Start: me.Start + "0"}).Alive() {
		t.Fatal("another start time must not pass for this process")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child, err := Of(cmd.Process.Pid)
	if err != nil || !child.Alive() {
		t.Fatalf("child: %+v %v", child, err)
	}
	if a := Ancestors(cmd.Process.Pid, 3); len(a) == 0 || a[0] != os.Getpid() {
		t.Fatalf("ancestors of the child: %v (want %d first)", a, os.Getpid())
	}
	cmd.Process.Kill()
	cmd.Wait()
	if child.Alive() {
		t.Fatal("a reaped child is not alive")
	}
}
