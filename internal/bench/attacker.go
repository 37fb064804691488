package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
)

// The attacks of --adversary run by default in a child process of their
// own, `claudemesh bench --attacker-child` (hidden), started under
// `nice -n --attacker-nice` (19 unless given). In this process they
// competed with the honest peers' load generator for the same two cores,
// so part of every ratio was the attacker's own CPU, which on the
// internet would be someone else's machine; a niced process of its own
// gives the honest side the CPU first and lets its CPU time be measured
// apart from the bench's and the broker's. The attacks are the same code
// doing the same things as fast as they can; with nice they get less of
// a saturated machine, which the counts of what each attack did show.
// --attacker-in-process keeps the old arrangement.
//
// The parent writes one line of JSON (attackerSpec) to the child's stdin;
// the child starts the attacks and answers "started"; when the parent
// closes stdin the child stops them (once each did something, as in
// process) and writes one line of JSON (AdversaryStats) to its stdout.

// attackerSpec is what the child needs to act as mallory.
type attackerSpec struct {
	BrokerURL    string   `json:"brokerUrl"`
	MeshID       string   `json:"meshId"`
	MemberID     string   `json:"memberId"`
	BrokerPubkey string   `json:"brokerPubkey"`
	SecretKey    string   `json:"secretKey"`
	Attacks      []string `json:"attacks"`
	// Idle asks for SCHED_IDLE (--attacker-sched idle); LeadMs is
	// --attack-lead.
	Idle   bool  `json:"idle"`
	LeadMs int64 `json:"leadMs"`
}

// attackerProfileEnv names a CPU profile file for the attacker child
// (CLAUDEMESH_BENCH_CPUPROFILE is the parent's, and is not passed on).
const attackerProfileEnv = "CLAUDEMESH_ATTACKER_CPUPROFILE"

// attackerProc is the running child.
type attackerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *bytes.Buffer
}

// startAttackerProcess starts the attacks as mallory in a child process.
func (r *run) startAttackerProcess(ctx context.Context, mallory client.MeshIdentity) (*adversary, error) {
	exe, err := executable(r.cfg, "run the attacker")
	if err != nil {
		return nil, err
	}
	args := []string{exe, "bench", "--attacker-child"}
	if n := r.cfg.AttackerNice; n != 0 {
		nice, err := exec.LookPath("nice")
		if err != nil {
			return nil, fmt.Errorf("--attacker-nice %d needs nice(1): %w (use --attacker-nice 0)", n, err)
		}
		args = append([]string{nice, "-n", strconv.Itoa(n)}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLAUDEMESH_BENCH_CPUPROFILE=") && !strings.HasPrefix(kv, attackerProfileEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if path := os.Getenv(attackerProfileEnv); path != "" {
		cmd.Env = append(cmd.Env, "CLAUDEMESH_BENCH_CPUPROFILE="+path)
	}
	cmd.Env = append(cmd.Env, r.cfg.childEnv...)
	cmd.SysProcAttr = childProcAttr()
	p := &attackerProc{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.stdout = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the attacker process: %w", err)
	}
	spec := attackerSpec{BrokerURL: mallory.BrokerURL, MeshID: mallory.MeshID, MemberID: mallory.MemberID,
		BrokerPubkey: mallory.BrokerPubkey, SecretKey: mallory.Member.SecretKeyHex(), Attacks: r.cfg.Attacks,
		Idle: r.cfg.AttackerSched == "idle", LeadMs: r.cfg.AttackLead.Milliseconds()}
	line, _ := json.Marshal(spec)
	started := make(chan error, 1)
	answerWait := 30*time.Second + startWait + r.cfg.AttackLead
	go func() {
		if _, err := p.stdin.Write(append(line, '\n')); err != nil {
			started <- err
			return
		}
		ans, err := p.stdout.ReadString('\n')
		if err == nil && strings.TrimSpace(ans) != "started" {
			err = fmt.Errorf("answered %q", ans)
		}
		started <- err
	}()
	select {
	case err = <-started:
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(answerWait):
		err = fmt.Errorf("no answer in %v", answerWait)
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("the attacker process: %w (%s)", err, strings.TrimSpace(p.stderr.String()))
	}
	return &adversary{attacks: r.cfg.Attacks, stats: r.cfg.adversary, proc: p}, nil
}

// stop asks the child to end the attacks and reads what they did.
func (p *attackerProc) stop(into *AdversaryStats) error {
	p.stdin.Close()
	done := make(chan error, 1)
	go func() {
		line, err := p.stdout.ReadString('\n')
		if err == nil {
			err = json.Unmarshal([]byte(line), into)
		}
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		err = errors.New("no report in 30 s")
	}
	if err != nil {
		p.cmd.Process.Kill()
	}
	if werr := p.cmd.Wait(); err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("the attacker process: %w (%s)", err, strings.TrimSpace(p.stderr.String()))
	}
	return nil
}

// cpu is the child's CPU time so far.
func (p *attackerProc) cpu() time.Duration { return procCPU(p.cmd.Process.Pid) }

// RunAttackerChild is `bench --attacker-child`: the attacks as the spec on
// in says, until in is closed; then what they did, as JSON, on out.
func RunAttackerChild(ctx context.Context, in io.Reader, out io.Writer) error {
	br := bufio.NewReader(in)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("attacker: reading the spec: %w", err)
	}
	var spec attackerSpec
	if err := json.Unmarshal([]byte(line), &spec); err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	key, err := cmcrypto.ParseSecretKey(spec.SecretKey)
	if err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	raiseFileLimit()
	if spec.Idle {
		// Before the attacks start threads, which inherit the policy.
		if err := schedIdle(); err != nil {
			return fmt.Errorf("attacker: %w (use --attacker-sched normal)", err)
		}
	}
	mallory := client.MeshIdentity{MeshID: spec.MeshID, MemberID: spec.MemberID, BrokerURL: spec.BrokerURL,
		BrokerPubkey: spec.BrokerPubkey, Member: key}
	stats := &AdversaryStats{}
	a := startAttacks(ctx, mallory, spec.Attacks, stats)
	if err := a.leadIn(ctx, time.Duration(spec.LeadMs)*time.Millisecond); err != nil {
		a.cancel() // not stop, which would wait for the attacks again
		a.wg.Wait()
		return fmt.Errorf("attacker: %w", err)
	}
	if _, err := io.WriteString(out, "started\n"); err != nil {
		a.stop()
		return err
	}
	io.Copy(io.Discard, br) // until the parent closes stdin
	a.stop()
	res, _ := json.Marshal(stats)
	_, err = out.Write(append(res, '\n'))
	return err
}
