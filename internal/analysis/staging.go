package analysis

import (
	"errors"
	"time"
)

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
	// from the evaluation's latency histogram (internal/scoring), within 1%.
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
