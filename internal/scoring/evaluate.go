package scoring

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// An evaluation sends every row of an evaluation set to a model server and tallies
// the answers. It can stop anywhere and resume from its last Progress without
// sending a scored row again: the staging activity heartbeats the Progress and picks
// it up when a worker crash makes Temporal retry it. Everything in a Progress is
// bounded, whatever the set's size, since heartbeat details are a Temporal payload.

// Window bounds how far past the first unscored row an evaluation goes, and so how
// many rows beyond Progress.Done it may have to list.
const Window = 256

// Progress is how far an evaluation has gone: rows [0, Done) and the rows in Extra
// are scored and in Tally.
type Progress struct {
	Rows  int   `json:"rows"`
	Done  int   `json:"done"`
	Extra []int `json:"extra,omitempty"`
	Tally Tally `json:"tally"`
}

// Scored is the number of rows scored.
func (p Progress) Scored() int { return p.Done + len(p.Extra) }

// Tally counts an evaluation's answers.
type Tally struct {
	// Requests is the number of rows sent, one request each; N of them answered.
	Requests int `json:"requests"`
	N        int `json:"n"`
	Correct  int `json:"correct"`
	Errors   int `json:"errors"`
	// ErrorsByKind counts failed requests by HTTP status ("503"), "timeout" or
	// "transport": never an error's text, which could carry a secret.
	ErrorsByKind map[string]int `json:"errorsByKind,omitempty"`
	// PerClass counts the answered rows of each true class: [n, correct].
	PerClass map[string][2]int `json:"perClass,omitempty"`
	// Latency is the answered requests' latency histogram.
	Latency LatencyHistogram `json:"latency"`
}

// LatencyHistogram keeps latencies in buckets 1% wide (log scale): a quantile read
// from it is within 1% of the exact order statistic, in bounded space.
type LatencyHistogram struct {
	// Buckets counts latencies by bucket index: bucket i holds (g^(i-1), g^i] µs.
	Buckets map[int]int `json:"buckets,omitempty"`
	Count   int         `json:"count"`
}

const latencyGrowth = 1.01

func (h *LatencyHistogram) add(d time.Duration) {
	us := max(float64(d)/float64(time.Microsecond), 1)
	i := int(math.Ceil(math.Log(us) / math.Log(latencyGrowth)))
	if h.Buckets == nil {
		h.Buckets = map[int]int{}
	}
	h.Buckets[i]++
	h.Count++
}

// Quantile returns the q-quantile (0..1): the upper bound of the bucket holding the
// smallest latency with at least a share q of the latencies at or below it.
func (h LatencyHistogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	idx := make([]int, 0, len(h.Buckets))
	for i := range h.Buckets {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	rank := max(int(math.Ceil(q*float64(h.Count))), 1)
	seen := 0
	for _, i := range idx {
		seen += h.Buckets[i]
		if seen >= rank {
			return time.Duration(math.Pow(latencyGrowth, float64(i)) * float64(time.Microsecond))
		}
	}
	return time.Duration(math.Pow(latencyGrowth, float64(idx[len(idx)-1])) * float64(time.Microsecond))
}

// EvaluateOptions tune Evaluate. The zero value is ready to use.
type EvaluateOptions struct {
	// Concurrency bounds the requests in flight; 0 means 4.
	Concurrency int
	// RequestTimeout bounds each request; 0 means 10s. A timed-out request is an error.
	RequestTimeout time.Duration
	// Checkpoint, if set, is called with the progress after each scored row, one call
	// at a time.
	Checkpoint func(Progress)
}

// Evaluate sends the rows of ds that from has not scored to the model server at
// endpoint, one row per request, and returns the progress with every row scored. If
// ctx ends first it returns the progress so far with ctx's error; a row cut short by
// ctx is not counted, so a resumed evaluation sends it again.
func Evaluate(ctx context.Context, c *Client, endpoint string, ds *Dataset, from Progress, opts EvaluateOptions) (Progress, error) {
	if ds == nil || len(ds.Rows) == 0 {
		return from, errors.New("evaluation: empty dataset")
	}
	if len(ds.Labels) != len(ds.Rows) {
		return from, fmt.Errorf("evaluation: %d labels for %d rows", len(ds.Labels), len(ds.Rows))
	}
	if from.Rows != 0 && from.Rows != len(ds.Rows) {
		return from, fmt.Errorf("evaluation: the progress is for %d rows, the evaluation set has %d: did the set change?", from.Rows, len(ds.Rows))
	}
	if c == nil {
		c = &Client{}
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 4
	}
	timeout := opts.RequestTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}

	p := from
	p.Rows = len(ds.Rows)
	p.Extra = slices.Clone(p.Extra)
	p.Tally = from.Tally.clone()
	done := map[int]bool{}
	for _, i := range p.Extra {
		done[i] = true
	}
	var mu sync.Mutex
	advanced := sync.NewCond(&mu) // the window moved: the feeder may go on

	// record counts a scored row and moves Done past every contiguous scored row.
	record := func(i int, labels []string, err error, latency time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		t := &p.Tally
		t.Requests++
		if err != nil {
			t.Errors++
			if t.ErrorsByKind == nil {
				t.ErrorsByKind = map[string]int{}
			}
			t.ErrorsByKind[ErrorKind(err)]++
		} else {
			truth := ds.Labels[i]
			pc := t.PerClass[truth]
			pc[0]++
			t.N++
			if CanonicalLabel(labels[0]) == truth {
				pc[1]++
				t.Correct++
			}
			if t.PerClass == nil {
				t.PerClass = map[string][2]int{}
			}
			t.PerClass[truth] = pc
			t.Latency.add(latency)
		}
		done[i] = true
		for done[p.Done] {
			delete(done, p.Done)
			p.Done++
		}
		p.Extra = p.Extra[:0]
		for j := range done {
			p.Extra = append(p.Extra, j)
		}
		slices.Sort(p.Extra)
		if opts.Checkpoint != nil {
			opts.Checkpoint(p.snapshot())
		}
		advanced.Broadcast()
	}

	rows := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, len(ds.Rows)) {
		wg.Go(func() {
			for i := range rows {
				rctx, cancel := context.WithTimeout(ctx, timeout)
				start := time.Now()
				labels, err := c.Predict(rctx, endpoint, ds.Columns, ds.Rows[i:i+1])
				latency := time.Since(start)
				cancel()
				if err != nil && ctx.Err() != nil {
					continue // cut short by our caller, not the server's fault: not scored
				}
				record(i, labels, err, latency)
			}
		})
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		advanced.Broadcast()
		mu.Unlock()
	})
	defer stop()
feed:
	for i := p.Done; i < len(ds.Rows); i++ {
		mu.Lock()
		for i >= p.Done+Window && ctx.Err() == nil {
			advanced.Wait()
		}
		skip := done[i]
		mu.Unlock()
		if skip {
			continue
		}
		select {
		case rows <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(rows)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	out := p.snapshot()
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("evaluation stopped after %d of %d rows: %w", out.Scored(), out.Rows, err)
	}
	return out, nil
}

// snapshot copies p so that it can be handed out while the evaluation goes on.
func (p Progress) snapshot() Progress {
	p.Extra = slices.Clone(p.Extra)
	p.Tally = p.Tally.clone()
	return p
}

func (t Tally) clone() Tally {
	out := t
	if t.ErrorsByKind != nil {
		out.ErrorsByKind = make(map[string]int, len(t.ErrorsByKind))
		for k, v := range t.ErrorsByKind {
			out.ErrorsByKind[k] = v
		}
	}
	if t.PerClass != nil {
		out.PerClass = make(map[string][2]int, len(t.PerClass))
		for k, v := range t.PerClass {
			out.PerClass[k] = v
		}
	}
	if t.Latency.Buckets != nil {
		out.Latency.Buckets = make(map[int]int, len(t.Latency.Buckets))
		for k, v := range t.Latency.Buckets {
			out.Latency.Buckets[k] = v
		}
	}
	return out
}

// ErrorKind names a failed request's cause without its text.
func ErrorKind(err error) string {
	var se *StatusError
	switch {
	case errors.As(err, &se):
		return strconv.Itoa(se.StatusCode)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "transport"
}
