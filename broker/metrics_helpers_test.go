package broker

import (
	"strconv"
	"strings"
	"testing"
)

// counterValue reads a counter (or gauge) of the broker's registry whose
// first label has the given value ("" for an unlabelled metric); 0 when
// absent. It reads the text exposition, as a scraper would.
func counterValue(t *testing.T, b *Broker, name, label string) float64 {
	t.Helper()
	var out strings.Builder
	if err := b.Registry().WritePrometheus(&out); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		metric, labels, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		if label != "" {
			_, first, _ := strings.Cut(labels, `="`)
			if v, _, _ := strings.Cut(first, `"`); v != label {
				continue
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return v
	}
	return 0
}
