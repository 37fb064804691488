package cliui

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a DUR argument: a Go duration ("90s", "15m", "1h30m")
// or a whole number of days ("7d"). Errors are usage-class *Error values
// (code invalid_argument, exit 2) that a command can return as is.
func ParseDuration(s string) (time.Duration, error) {
	bad := func() error {
		return Errorf(CodeInvalidArgument, "invalid duration %q: give a number and a unit (90s, 15m, 2h) or a number of days (7d)", s)
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || strings.HasPrefix(days, "+") {
			return 0, bad()
		}
		if n > math.MaxInt64/int64(24*time.Hour) || n < math.MinInt64/int64(24*time.Hour) {
			return 0, bad()
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, bad()
	}
	return d, nil
}
