package analysis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// StagingOptions tune EvaluateStaging. The zero value is ready to use.
type StagingOptions struct {
	// Concurrency bounds the requests in flight; 0 means 4.
	Concurrency int
	// RequestTimeout bounds each request; 0 means 10s. A timed-out request is an error.
	RequestTimeout time.Duration
	// Progress, if set, is called after each answered or failed row with the number
	// done so far, one call at a time; an activity heartbeats from it.
	Progress func(done, total int)
}

// StagingReport is the evidence of one staging evaluation of one endpoint. It
// travels through workflow history, so it holds counts, never error texts.
type StagingReport struct {
	// Requests is the number of rows sent, one request each.
	Requests int `json:"requests"`
	// N is the number of rows answered; Accuracy is Correct/N. A failed request counts
	// in Errors, not as a wrong answer.
	N        int     `json:"n"`
	Correct  int     `json:"correct"`
	Accuracy float64 `json:"accuracy"`
	Errors   int     `json:"errors"`
	// ErrorsByStatus counts failed requests by HTTP status ("503"), "timeout" or
	// "transport" (no answer).
	ErrorsByStatus map[string]int `json:"errorsByStatus,omitempty"`
	// P50 and P99 are latency quantiles of the answered requests (nanoseconds in JSON):
	// exact order statistics, the smallest observed latency with at least that share of
	// observations at or below it (gonum stat.Quantile, stat.Empirical).
	P50 time.Duration `json:"p50LatencyNs"`
	P99 time.Duration `json:"p99LatencyNs"`
	// PerClass is the accuracy on the answered rows of each true class.
	PerClass map[string]ClassAccuracy `json:"perClass"`
}

// ErrorRate is the share of requests that failed.
func (r StagingReport) ErrorRate() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.Errors) / float64(r.Requests)
}

// ClassAccuracy is the accuracy on the rows of one true class.
type ClassAccuracy struct {
	N       int `json:"n"`
	Correct int `json:"correct"`
}

// ErrAllRequestsFailed means no row of a staging evaluation was answered; the report
// returned beside it still counts the errors.
var ErrAllRequestsFailed = errors.New("every staging request failed")

// EvaluateStaging sends every row of ds to the model server at endpoint (its base URL;
// requests go to endpoint+"/invocations"), one row per request with bounded
// concurrency, and reports accuracy, errors and latency. It returns an error, with the
// partial report, if ctx ends first or if every request failed.
func EvaluateStaging(ctx context.Context, c *scoring.Client, endpoint string, ds *scoring.Dataset, opts StagingOptions) (StagingReport, error) {
	if ds == nil || len(ds.Rows) == 0 {
		return StagingReport{}, errors.New("staging evaluation: empty dataset")
	}
	if len(ds.Labels) != len(ds.Rows) {
		return StagingReport{}, fmt.Errorf("staging evaluation: %d labels for %d rows", len(ds.Labels), len(ds.Rows))
	}
	if c == nil {
		c = &scoring.Client{}
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 4
	}
	timeout := opts.RequestTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}

	type outcome struct {
		sent      bool
		err       error
		predicted string
		latency   time.Duration
	}
	outcomes := make([]outcome, len(ds.Rows))
	rows := make(chan int)
	var (
		wg       sync.WaitGroup
		progress sync.Mutex
		done     int
	)
	for range min(conc, len(ds.Rows)) {
		wg.Go(func() {
			for i := range rows {
				rctx, cancel := context.WithTimeout(ctx, timeout)
				start := time.Now()
				labels, err := c.Predict(rctx, endpoint, ds.Columns, ds.Rows[i:i+1])
				o := outcome{sent: true, err: err, latency: time.Since(start)}
				cancel()
				if err == nil {
					o.predicted = scoring.CanonicalLabel(labels[0])
				}
				if err != nil && ctx.Err() != nil {
					o.sent = false // cut short by our caller, not the server's fault
				}
				outcomes[i] = o
				if opts.Progress != nil {
					progress.Lock()
					done++
					opts.Progress(done, len(ds.Rows))
					progress.Unlock()
				}
			}
		})
	}
feed:
	for i := range ds.Rows {
		select {
		case rows <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(rows)
	wg.Wait()

	r := StagingReport{PerClass: map[string]ClassAccuracy{}}
	var latencies []float64
	for i, o := range outcomes {
		if !o.sent {
			continue
		}
		r.Requests++
		if o.err != nil {
			r.Errors++
			if r.ErrorsByStatus == nil {
				r.ErrorsByStatus = map[string]int{}
			}
			r.ErrorsByStatus[errorKind(o.err)]++
			continue
		}
		truth := ds.Labels[i]
		pc := r.PerClass[truth]
		pc.N++
		r.N++
		if o.predicted == truth {
			pc.Correct++
			r.Correct++
		}
		r.PerClass[truth] = pc
		latencies = append(latencies, float64(o.latency))
	}
	if r.N > 0 {
		r.Accuracy = float64(r.Correct) / float64(r.N)
		slices.Sort(latencies)
		r.P50 = time.Duration(stat.Quantile(0.50, stat.Empirical, latencies, nil))
		r.P99 = time.Duration(stat.Quantile(0.99, stat.Empirical, latencies, nil))
	}
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("staging evaluation stopped after %d of %d rows: %w", r.Requests, len(ds.Rows), err)
	}
	if r.N == 0 {
		return r, fmt.Errorf("%w: %d of %d (by status: %v); is the model server up and serving this dataset's columns?",
			ErrAllRequestsFailed, r.Errors, r.Requests, r.ErrorsByStatus)
	}
	return r, nil
}

// errorKind names a failed request's cause without its text, which could carry
// secrets into workflow history.
func errorKind(err error) string {
	var se *scoring.StatusError
	switch {
	case errors.As(err, &se):
		return strconv.Itoa(se.StatusCode)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "transport"
}
