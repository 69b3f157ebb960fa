package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// countingServer answers every row with its label (the row's one feature mod 3) and
// counts the requests for each row.
func countingServer(t *testing.T) (url string, asked func() map[int]int) {
	var mu sync.Mutex
	counts := map[int]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req scoring.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.DataframeSplit == nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		i := int(req.DataframeSplit.Data[0][0])
		mu.Lock()
		counts[i]++
		mu.Unlock()
		fmt.Fprintf(w, `{"predictions": [%d]}`, i%3)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() map[int]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[int]int{}
		for k, v := range counts {
			out[k] = v
		}
		return out
	}
}

func writeSet(t *testing.T, n int) (string, *scoring.Dataset) {
	var b strings.Builder
	b.WriteString("i,label\n")
	for i := range n {
		fmt.Fprintf(&b, "%d,%d\n", i, i%3)
	}
	path := filepath.Join(t.TempDir(), "eval.csv")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	ds, err := scoring.LoadCSV(path)
	require.NoError(t, err)
	return path, ds
}

// A retried evaluation (its worker lost) starts from the heartbeat details: the rows
// they count are not sent again, and the reports count every row once.
func TestEvaluateStagingResumesFromHeartbeat(t *testing.T) {
	const n = 200
	path, ds := writeSet(t, n)
	candURL, candAsked := countingServer(t)
	champURL, champAsked := countingServer(t)

	// The lost attempt scored 150 candidate rows, in a run of its own.
	ctx, cancel := context.WithCancel(context.Background())
	var done scoring.Progress
	_, _ = scoring.Evaluate(ctx, nil, candURL, ds, scoring.Progress{}, scoring.EvaluateOptions{Checkpoint: func(p scoring.Progress) {
		if p.Scored() <= 150 {
			done = p
		}
		if p.Scored() >= 150 {
			cancel()
		}
	}})
	cancel()
	before := candAsked()

	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.RegisterActivity(&Activities{Scoring: &scoring.Client{}})
	env.SetHeartbeatDetails(StagingProgress{Dataset: path, Rows: n, Phase: "candidate", Candidate: done})
	v, err := env.ExecuteActivity((&Activities{}).EvaluateStaging, EvaluateInput{Dataset: path, Candidate: candURL, Champion: champURL})
	require.NoError(t, err)
	var out EvaluateOutput
	require.NoError(t, v.Get(&out))
	require.Equal(t, n, out.Candidate.Requests)
	require.Equal(t, n, out.Candidate.Correct)
	require.Equal(t, n, out.Champion.N)

	after := candAsked()
	scored := map[int]bool{}
	for i := range done.Done {
		scored[i] = true
	}
	for _, i := range done.Extra {
		scored[i] = true
	}
	for i := range n {
		if scored[i] {
			require.Equalf(t, before[i], after[i], "row %d was scored by the lost attempt and sent again", i)
		} else {
			require.Positivef(t, after[i]-before[i], "row %d never sent by the retry", i)
		}
	}
	require.Len(t, champAsked(), n)
}
