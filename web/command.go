package web

import (
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
)

// UnavailableHint is what to do when the daemon of home could not serve
// the page on its address: usually another identity's daemon on this
// machine holds it, and the address that is busy is the one not to
// suggest. The commands name home (config.Invocation): run as printed
// they restart this daemon, never the other one.
func UnavailableHint(home string) string {
	cm := config.Invocation(home)
	return "another daemon on this machine may hold the port: " + cm + " daemon down && " + cm + " daemon up --web 127.0.0.1:0 (any free port; CLAUDEMESH_WEB sets it for every start)"
}

// uiJSON is `ui --json`.
type uiJSON struct {
	URL       string `json:"url"`
	ExpiresAt int64  `json:"expiresAt"`
	Opened    bool   `json:"opened"`
	PeerCheck string `json:"peerCheck,omitempty"`
}

// Command is `claudemesh ui`: a one-time login link for the local chat
// page, opened in the browser when there is a desktop.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "ui",
		Usage: "open the local chat page (prints a one-time login link)",
		Description: cliui.WithExamples(
			"The daemon serves the page on 127.0.0.1:7901 (daemon up --web ADDR, or --web off).\n"+
				"The link works once, within 60 seconds, and opens one tab; the browser then keeps\n"+
				"a session until the daemon restarts, 7 days pass, or Log out in the page ends it.\n"+
				"The browser never holds a key: the daemon encrypts.",
			"claudemesh ui",
			"claudemesh ui --no-open",
			"claudemesh ui --json",
		),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-open", Usage: "only print the link, do not start a browser"},
		},
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			g := cliui.GlobalsFrom(c)
			home, err := config.ResolveHome(g.Home)
			if err != nil {
				return cliui.Errorf(cliui.CodeInvalidArgument, "%v", err).WithHint("pass --home DIR")
			}
			if cfg, lerr := config.Load(home); lerr == nil && len(cfg.Meshes) == 0 {
				// No daemon runs for a home that joined nothing (daemon up
				// refuses it), so there is no page to open: not an
				// unreachable daemon.
				return cliui.Errorf(cliui.CodeNotJoined, "%s has joined no mesh, so no daemon serves a chat page for it", home).
					WithHint("join one first: " + config.Invocation(home) + " join LINK")
			}
			if g.NoDaemon {
				return cliui.Errorf("unreachable", "the chat page is served by the daemon, and --no-daemon (or CLAUDEMESH_NO_DAEMON) forbids it").
					WithHint("run claudemesh ui without --no-daemon")
			}
			api, err := localapi.Connect(c.Context, home, true)
			if err != nil {
				return cliui.Errorf("unreachable", "the daemon cannot be reached: %v", err).WithHint(config.Invocation(home) + " daemon up")
			}
			var login localapi.WebLogin
			if _, err := api.Do(c.Context, "POST", "/v1/web/login", nil, &login); err != nil {
				if ae, ok := err.(*localapi.APIError); ok {
					cm := config.Invocation(home)
					hint := cm + " daemon down && " + cm + " daemon up --web " + DefaultAddr
					if ae.Body.Code == "web_unavailable" {
						hint = UnavailableHint(home)
					}
					return cliui.Errorf(ae.Body.Code, "%s", ae.Body.Message).WithHint(hint)
				}
				return cliui.Errorf("unreachable", "the daemon stopped answering: %v", err).WithHint("claudemesh daemon status")
			}
			opened := false
			if !c.Bool("no-open") {
				opened = openBrowser(login.URL)
			}
			out := cliui.OutFrom(c)
			if login.PeerCheck == "off" {
				out.Warn(AnyLocalUserWarning, "")
			}
			if out.JSONMode() {
				return out.JSON(uiJSON{URL: login.URL, ExpiresAt: login.ExpiresAt, Opened: opened, PeerCheck: login.PeerCheck})
			}
			secs := int(time.Until(time.UnixMilli(login.ExpiresAt)).Round(time.Second).Seconds())
			if opened {
				out.Resultf("opening the chat page in your browser")
			}
			out.Resultf("%s", login.URL)
			out.Linef("%s", out.Commands("this link works once, within "+strconv.Itoa(secs)+" seconds; run claudemesh ui again for a new one"))
			return nil
		},
	}
}
