package bench

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/internal/cliui"
)

// envOperatorToken carries the operator token for --broker, for scripts
// that would rather not write it to a file.
const envOperatorToken = "CLAUDEMESH_OPERATOR_TOKEN"

// Command is `claudemesh bench`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a broker: N peers sending end-to-end encrypted DMs or broadcasts",
		Description: cliui.WithExamples(
			"Starts `claudemesh broker` as a child process on a temporary store (--rate 0, no connection cap),\n"+
				"creates a mesh, enrolls --peers members with a signed invite, connects them as presences and has\n"+
				"each send --messages crypto_box DMs to random other peers, at most --window un-acked at a time.\n"+
				"Reports delivered %, throughput, send→ack and send→push latency (p50/p95/p99/max) and the\n"+
				"broker's peak RSS. With --broker URL it loads an existing broker instead (operator token from\n"+
				"--operator-token-file or $"+envOperatorToken+"; no RSS). Build without -race to measure.",
			"claudemesh bench",
			"claudemesh bench --peers 100 --messages 1000 --json",
			"claudemesh bench --broadcast --peers 1000 --messages 100",
			"claudemesh bench --peers 2 --messages 0 --idle-connections 5000",
			"claudemesh bench --broker wss://mesh.example.com/ws --operator-token-file /var/lib/claudemesh/operator.token",
		),
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "peers", Value: DefaultPeers, Usage: "`N` peers (with --broadcast: recipients)"},
			&cli.IntFlag{Name: "messages", Value: DefaultMessages, Usage: "`M` DMs per peer (with --broadcast: M broadcasts)"},
			&cli.IntFlag{Name: "window", Value: DefaultWindow, Usage: "at most `W` un-acked sends per sender"},
			&cli.IntFlag{Name: "payload", Value: DefaultPayload, Usage: "plaintext `BYTES` per message"},
			&cli.BoolFlag{Name: "broadcast", Usage: "one sender broadcasts to all peers, one message at a time"},
			&cli.IntFlag{Name: "idle-connections", Usage: "also hold `N` idle presence connections"},
			&cli.BoolFlag{Name: "via-daemon", Usage: "send through the local daemon (not supported yet)"},
			&cli.StringFlag{Name: "broker", Usage: "load an existing broker at `URL` instead of a child broker"},
			&cli.StringFlag{Name: "operator-token-file", Usage: "`FILE` holding the operator token of --broker"},
		},
		Action: action,
	}
}

func action(c *cli.Context) error {
	if err := cliui.NoArgs(c); err != nil {
		return err
	}
	if c.Bool("via-daemon") {
		return errViaDaemon()
	}
	cfg := Config{
		Peers: c.Int("peers"), Messages: c.Int("messages"), Window: c.Int("window"),
		Payload: c.Int("payload"), Broadcast: c.Bool("broadcast"),
		IdleConnections: c.Int("idle-connections"), BrokerURL: c.String("broker"),
	}
	if f := c.String("operator-token-file"); f != "" {
		if cfg.BrokerURL == "" {
			return cliui.UsageErrorf("--operator-token-file is for --broker; a child broker's token is read from its own data directory")
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return cliui.Errorf(cliui.CodeInvalidArgument, "reading the operator token: %w", err)
		}
		cfg.OperatorToken = strings.TrimSpace(string(data))
	} else if cfg.BrokerURL != "" {
		cfg.OperatorToken = strings.TrimSpace(os.Getenv(envOperatorToken))
	}
	out := cliui.OutFrom(c)
	spin := out.Spinner("starting")
	cfg.Progress = spin.Update
	var warnings []string
	cfg.Warn = func(msg string) { warnings = append(warnings, msg) }

	res, err := Run(c.Context, cfg)
	spin.Stop()
	for _, w := range warnings {
		out.Warn(w, "")
	}
	if err != nil {
		if code := client.CodeOf(err); code != "" {
			return &cliui.Error{Code: code, Message: err.Error(), Cause: err}
		}
		return err
	}
	if out.JSONMode() {
		return out.JSON(res)
	}
	report(out, res)
	return nil
}

// report prints the human summary.
func report(out *cliui.Out, r *Result) {
	what := fmt.Sprintf("%d peers × %d DMs", r.Peers, r.Messages)
	if r.Broadcast {
		what = fmt.Sprintf("%d broadcasts to %d peers", r.Messages, r.Peers)
	}
	where := "broker " + r.BrokerURL
	if r.BrokerPID != 0 {
		where = fmt.Sprintf("child broker pid %d", r.BrokerPID)
	}
	out.Linef("claudemesh bench: %s, window %d, %d-byte payload (%s)", what, r.Window, r.Payload, where)
	if r.IdleConnections > 0 {
		out.Linef("idle        %d presence connections held open", r.IdleConnections)
	}
	out.Resultf("delivered   %d/%d (%.2f %%)", r.Delivered, r.Expected, r.DeliveredPct)
	out.Resultf("duration    %.3f s (set-up %.2f s, not counted)", r.DurationSec, r.SetupSec)
	out.Resultf("throughput  %.1f msgs/s", r.MsgsPerSec)
	lat := func(l Latency) string {
		return fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s", ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max))
	}
	out.Resultf("send→ack    %s", lat(r.AckMs))
	out.Resultf("send→push   %s", lat(r.E2eMs))
	if r.BrokerPeakRssMB != nil {
		out.Resultf("broker RSS  %.1f MB peak (VmHWM); at the end %.1f MB (%.1f MB anonymous, %.1f MB file-backed)",
			*r.BrokerPeakRssMB, r.BrokerEndRssMB, r.BrokerEndAnonMB, r.BrokerEndFileMB)
	} else {
		out.Linef("broker RSS  not measured (not a child process)")
	}
	if r.BrokerCPUSec > 0 && r.DurationSec > 0 {
		out.Linef("cpu         broker %.2f s (%.2f cores), bench %.2f s (%.2f cores) while sending",
			r.BrokerCPUSec, r.BrokerCPUSec/r.DurationSec, r.BenchCPUSec, r.BenchCPUSec/r.DurationSec)
	}
	if r.SystemEvents > 0 {
		out.Linef("presence    %d peer events pushed to the bench's connections (set-up included)", r.SystemEvents)
	}
	var notes []string
	for _, n := range []struct {
		v    int64
		what string
	}{
		{r.Refused, "sends refused"}, {r.Retried, "sends retried after rate_limited"},
		{r.Undecryptable, "pushes that did not open to what was sent"},
		{r.Redelivered, "redelivered pushes"}, {r.Late, "pushes after the 60 s drain"},
	} {
		if n.v > 0 {
			notes = append(notes, fmt.Sprintf("%d %s", n.v, n.what))
		}
	}
	if len(notes) > 0 {
		out.Linef("notes       %s", strings.Join(notes, "; "))
	}
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}
