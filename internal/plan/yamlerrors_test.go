package plan

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every YAML error of a plan is reported, each with its line, in the plan's words.
func TestParseReportsEveryYAMLError(t *testing.T) {
	_, err := Parse([]byte(`model: wine
colour: red
canary:
  steps:
    - {weight: "ten", bake: 10 minutes}
analysis:
  interval: 1m
  metrics:
    - name: e
      query: up
      max: lots
`))
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{
		`line 2: unknown field "colour" in the plan`,
		`line 5: want a whole number, got the string "ten"`,
		`line 5: want a duration such as "30s" or "5m", got "10 minutes"`,
		`line 11: want a number, got the string "lots"`,
	} {
		require.Contains(t, msg, want)
	}
	require.NotContains(t, msg, "plan.Plan")
	require.Len(t, strings.Split(msg, "\n"), 4)
}
