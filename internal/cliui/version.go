package cliui

import (
	"os"
	"strconv"

	"github.com/urfave/cli/v2"
)

// PlainVersion reports whether argv (argv[0] included) is `NAME --version`
// or `NAME version` and nothing else, in an environment that running it on
// the app would not refuse: none of the global flags' variables holds a
// value their parsing rejects (CLAUDEMESH_NO_DAEMON=maybe fails every
// command line, this one included). The version command then prints
// ResultText of its line and exits ExitOK, so main may print that itself
// without building, setting up and running an app (~0.2 ms of a ~4 ms
// process: urfave/cli's flag set, signal handling, the colour checks).
func PlainVersion(argv []string) bool {
	if len(argv) != 2 || (argv[1] != "--"+FlagVersion && argv[1] != "version") {
		return false
	}
	for _, f := range GlobalFlags() {
		var envs []string
		switch f := f.(type) {
		case *cli.StringFlag:
			continue // any value is a string
		case *cli.BoolFlag:
			for _, env := range f.EnvVars {
				if v, set := os.LookupEnv(env); set {
					if _, err := strconv.ParseBool(v); v != "" && err != nil {
						return false
					}
					break // urfave/cli reads the first one set
				}
			}
			continue
		case cli.DocGenerationFlag:
			envs = f.GetEnvVars()
		}
		for _, env := range envs {
			if _, set := os.LookupEnv(env); set {
				return false // a type this function does not know to parse
			}
		}
	}
	return true
}

// ResultText is what Out.Resultf writes in human mode for the text s.
func ResultText(s string) string { return indent(s) }
