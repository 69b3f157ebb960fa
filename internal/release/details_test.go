package release

import (
	"strings"
	"testing"

	"go.temporal.io/sdk/converter"

	"github.com/mlrelease/mlrelease/internal/plan"
)

func converterFor() converter.DataConverter { return converter.GetDefaultDataConverter() }

func TestWebUIURL(t *testing.T) {
	for _, tt := range []struct{ base, ns, id, want string }{
		{"http://localhost:8233", "default", "release/wine", "http://localhost:8233/namespaces/default/workflows/release%2Fwine"},
		{"http://localhost:8233/", "", "release/wine", "http://localhost:8233/namespaces/default/workflows/release%2Fwine"},
		{"https://ui.example.com/temporal", "ml prod", "release/a b", "https://ui.example.com/temporal/namespaces/ml%20prod/workflows/release%2Fa%20b"},
	} {
		if got := WebUIURL(tt.base, tt.ns, tt.id); got != tt.want {
			t.Errorf("WebUIURL(%q, %q, %q) = %q, want %q", tt.base, tt.ns, tt.id, got, tt.want)
		}
	}
}

func TestDetails(t *testing.T) {
	p, err := plan.Parse([]byte(`
model: wine
candidate: "2"
staging: {dataset: /data/eval.csv, minAccuracy: 0.8, maxP99Latency: 200ms}
shadow: {share: 20, duration: 10m}
canary:
  steps: [{weight: 10, bake: 5m}, {weight: 50, bake: 10m}]
analysis:
  metrics: [{name: error_rate, query: "up", max: 0.01}, {name: p99, query: "up", max: 0.3}]
approval: {timeout: 1h}
postPromotion: {watch: 15m}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := Details(*p, "1", "alice")
	for _, want := range []string{
		"**Release of wine**: candidate `2` against champion `1`, started by alice",
		"- staging: evaluation set `/data/eval.csv`, accuracy at least 0.8 and at most 0.02 below the champion, p99 latency at most 200ms",
		"- shadow: 20% of traffic mirrored for 10m0s",
		"- canary: 10% for 5m0s → 50% for 10m0s; analysed every 1m0s on error_rate, p99",
		"- approval: veto window of 1h0m0s, then promote",
		"- after promotion: watched for 15m0s",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("details lack %q:\n%s", want, got)
		}
	}
	if s := Summary("wine", "2", "1"); s != "release wine 2 (champion 1)" {
		t.Errorf("Summary = %q", s)
	}
}
