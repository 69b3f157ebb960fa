package scoring

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// rowServer is a model server whose rows carry their index as their one feature: it
// answers the row's label (index mod 3; wrong for every tenth row) and counts the
// requests for each row.
type rowServer struct {
	*httptest.Server
	mu    sync.Mutex
	asked map[int]int
	delay time.Duration
}

func newRowServer(t *testing.T, delay time.Duration) *rowServer {
	s := &rowServer{asked: map[int]int{}, delay: delay}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.DataframeSplit == nil || len(req.DataframeSplit.Data) != 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		i := int(req.DataframeSplit.Data[0][0])
		s.mu.Lock()
		s.asked[i]++
		s.mu.Unlock()
		if s.delay > 0 {
			select {
			case <-time.After(s.delay):
			case <-r.Context().Done():
				return
			}
		}
		label := i % 3
		if i%10 == 0 {
			label = (label + 1) % 3
		}
		fmt.Fprintf(w, `{"predictions": [%d]}`, label)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *rowServer) requests() (total int, asked map[int]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	asked = map[int]int{}
	for k, v := range s.asked {
		asked[k] = v
		total += v
	}
	return total, asked
}

func indexedSet(n int) *Dataset {
	ds := &Dataset{Columns: []string{"i"}}
	for i := range n {
		ds.Rows = append(ds.Rows, []float64{float64(i)})
		ds.Labels = append(ds.Labels, strconv.Itoa(i%3))
	}
	return ds
}

func TestEvaluateTalliesEveryRow(t *testing.T) {
	srv := newRowServer(t, 0)
	p, err := Evaluate(context.Background(), nil, srv.URL, indexedSet(100), Progress{}, EvaluateOptions{})
	require.NoError(t, err)
	require.Equal(t, 100, p.Done)
	require.Empty(t, p.Extra)
	require.Equal(t, 100, p.Tally.Requests)
	require.Equal(t, 100, p.Tally.N)
	require.Equal(t, 90, p.Tally.Correct)
	require.Equal(t, [2]int{34, 30}, p.Tally.PerClass["0"])
	require.Equal(t, 100, p.Tally.Latency.Count)
	require.Positive(t, p.Tally.Latency.Quantile(0.99))
	total, _ := srv.requests()
	require.Equal(t, 100, total)
}

// An evaluation stopped half way resumes from its last checkpoint: every row the
// checkpoint counts is sent once in all, and the tally is the same as in one go.
func TestEvaluateResumesWithoutResendingScoredRows(t *testing.T) {
	srv := newRowServer(t, 5*time.Millisecond)
	ds := indexedSet(300)
	ctx, cancel := context.WithCancel(context.Background())
	var last Progress
	_, err := Evaluate(ctx, nil, srv.URL, ds, Progress{}, EvaluateOptions{Concurrency: 8, Checkpoint: func(p Progress) {
		last = p
		if p.Scored() >= 120 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	require.GreaterOrEqual(t, last.Scored(), 120)
	require.Less(t, last.Scored(), 300)

	p, err := Evaluate(context.Background(), nil, srv.URL, ds, last, EvaluateOptions{Concurrency: 8})
	require.NoError(t, err)
	require.Equal(t, 300, p.Done)
	require.Equal(t, 300, p.Tally.Requests)
	require.Equal(t, 270, p.Tally.Correct)

	_, asked := srv.requests()
	scored := map[int]bool{}
	for i := range last.Done {
		scored[i] = true
	}
	for _, i := range last.Extra {
		scored[i] = true
	}
	for i := range 300 {
		require.GreaterOrEqualf(t, asked[i], 1, "row %d never sent", i)
		if scored[i] {
			require.Equalf(t, 1, asked[i], "row %d was scored before the stop and sent again", i)
		}
	}
}

func TestEvaluateRefusesAProgressForAnotherSet(t *testing.T) {
	srv := newRowServer(t, 0)
	_, err := Evaluate(context.Background(), nil, srv.URL, indexedSet(10), Progress{Rows: 11, Done: 3}, EvaluateOptions{})
	require.ErrorContains(t, err, "progress is for 11 rows")
}

// 100,000 rows: the progress a heartbeat carries stays small throughout.
func TestEvaluateHundredThousandRows(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 requests")
	}
	srv := newRowServer(t, 0)
	const n = 100_000
	largest := 0
	calls := 0
	start := time.Now()
	p, err := Evaluate(context.Background(), &Client{HTTP: srv.Client()}, srv.URL, indexedSet(n), Progress{}, EvaluateOptions{Concurrency: 16, Checkpoint: func(p Progress) {
		calls++
		if calls%1000 == 0 {
			b, err := json.Marshal(p)
			require.NoError(t, err)
			largest = max(largest, len(b))
		}
	}})
	require.NoError(t, err)
	require.Equal(t, n, p.Done)
	require.Equal(t, n*9/10, p.Tally.Correct)
	require.Less(t, largest, 16<<10, "a heartbeat's progress stays small")
	total, _ := srv.requests()
	require.Equal(t, n, total)
	t.Logf("100,000 rows in %s; largest progress %d bytes", time.Since(start).Round(time.Millisecond), largest)
}

func TestLatencyQuantileWithinOnePercent(t *testing.T) {
	var h LatencyHistogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, q := range []float64{0.5, 0.99} {
		exact := time.Duration(q*1000) * time.Millisecond
		got := h.Quantile(q)
		require.InEpsilonf(t, float64(exact), float64(got), 0.011, "q%v: got %s, exact %s", q, got, exact)
	}
}

// Failed requests are counted apart, by kind (HTTP status, timeout, transport), never
// as wrong answers; their texts, which could carry secrets, are not kept.
func TestEvaluateCountsFailuresByKind(t *testing.T) {
	ds := indexedSet(12)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "token=s3cret overloaded", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	slow := newRowServer(t, time.Second)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	for _, c := range []struct {
		name, url, kind string
		timeout         time.Duration
	}{
		{"503", failing.URL, "503", 0},
		{"timeout", slow.URL, "timeout", 20 * time.Millisecond},
		{"transport", dead.URL, "transport", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Evaluate(context.Background(), nil, c.url, ds, Progress{}, EvaluateOptions{RequestTimeout: c.timeout})
			require.NoError(t, err)
			require.Equal(t, 12, p.Tally.Requests)
			require.Equal(t, 12, p.Tally.Errors)
			require.Zero(t, p.Tally.N)
			require.Equal(t, map[string]int{c.kind: 12}, p.Tally.ErrorsByKind)
			b, _ := json.Marshal(p)
			require.NotContains(t, string(b), "s3cret")
		})
	}
}

// A cancelled evaluation stops, with the progress so far and the context's error.
func TestEvaluateHonoursCancellation(t *testing.T) {
	srv := newRowServer(t, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Evaluate(ctx, nil, srv.URL, indexedSet(200), Progress{}, EvaluateOptions{Concurrency: 2, Checkpoint: func(p Progress) {
		if p.Scored() == 4 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, p.Scored(), 200)
	require.GreaterOrEqual(t, p.Scored(), 4)
}
