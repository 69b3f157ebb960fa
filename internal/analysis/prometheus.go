package analysis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// ErrQueryRejected means Prometheus refused the query itself (bad PromQL, or a result
// that is not one number); running it again cannot help.
var ErrQueryRejected = errors.New("query rejected")

// Prometheus reads metric values through Prometheus's HTTP API.
type Prometheus struct {
	api v1.API
}

// NewPrometheus returns a client for the Prometheus server at address.
func NewPrometheus(address string) (*Prometheus, error) {
	c, err := api.NewClient(api.Config{Address: address})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", address, err)
	}
	return &Prometheus{api: v1.NewAPI(c)}, nil
}

// ErrNotFinite means a query returned an infinite value, or a counter that is not a
// number: an analysis error, never a value to judge.
var ErrNotFinite = errors.New("not a finite number")

// Value runs an instant query at time at. It returns nil when the result is empty or
// NaN (no data: PromQL's 0/0, a quantile of no requests), ErrNotFinite when it is
// infinite, ErrQueryRejected when Prometheus refuses the query or it returns more
// than one series, and other errors when Prometheus cannot be reached.
func (p *Prometheus) Value(ctx context.Context, query string, at time.Time) (*float64, error) {
	v, _, _, err := p.api.Query(ctx, query, at)
	if err != nil {
		var perr *v1.Error
		if errors.As(err, &perr) && (perr.Type == v1.ErrBadData || perr.Type == v1.ErrExec) {
			return nil, fmt.Errorf("%w: %s: %s", ErrQueryRejected, query, perr.Msg)
		}
		return nil, fmt.Errorf("query prometheus: %w", err)
	}
	var f float64
	switch r := v.(type) {
	case model.Vector:
		switch len(r) {
		case 0:
			return nil, nil
		case 1:
			f = float64(r[0].Value)
		default:
			return nil, fmt.Errorf("%w: %s returned %d series; the query must return one (aggregate it with sum or max)", ErrQueryRejected, query, len(r))
		}
	case *model.Scalar:
		f = float64(r.Value)
	default:
		return nil, fmt.Errorf("%w: %s returned a %s; want a scalar or one series", ErrQueryRejected, query, v.Type())
	}
	switch {
	case math.IsNaN(f):
		return nil, nil
	case math.IsInf(f, 0):
		return nil, fmt.Errorf("%w: %s returned %v", ErrNotFinite, query, f)
	}
	return &f, nil
}

// Buckets runs an instant query at time at whose result is a histogram's cumulative
// bucket counts, by upper bound ("0.25", "+Inf"): either one series per classic
// bucket ("sum by (le) (..._bucket{...})", keyed by their "le" label) or one native
// histogram ("sum(...{...})", Prometheus with --enable-feature=native-histograms),
// whose buckets are summed up to each upper bound, its count under "+Inf". An empty
// result is an empty map (no data); a series without "le", or more than one native
// histogram, makes the query rejected; a count that is not a finite number is
// ErrNotFinite.
func (p *Prometheus) Buckets(ctx context.Context, query string, at time.Time) (map[string]float64, error) {
	v, _, _, err := p.api.Query(ctx, query, at)
	if err != nil {
		var perr *v1.Error
		if errors.As(err, &perr) && (perr.Type == v1.ErrBadData || perr.Type == v1.ErrExec) {
			return nil, fmt.Errorf("%w: %s: %s", ErrQueryRejected, query, perr.Msg)
		}
		return nil, fmt.Errorf("query prometheus: %w", err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("%w: %s returned a %s; want one series per bucket (sum by (le) of a _bucket counter) or one native histogram", ErrQueryRejected, query, v.Type())
	}
	if len(vec) > 0 && vec[0].Histogram != nil {
		if len(vec) > 1 {
			return nil, fmt.Errorf("%w: %s returned %d native histograms; aggregate them into one with sum", ErrQueryRejected, query, len(vec))
		}
		return NativeBuckets(vec[0].Histogram)
	}
	out := make(map[string]float64, len(vec))
	for _, s := range vec {
		le, ok := s.Metric[model.BucketLabel]
		if !ok || s.Histogram != nil {
			return nil, fmt.Errorf("%w: %s returned a series without an \"le\" label; aggregate it with sum by (le)", ErrQueryRejected, query)
		}
		f := float64(s.Value)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%w: %s returned %v for bucket le=%q", ErrNotFinite, query, f, le)
		}
		out[string(le)] = f
	}
	return out, nil
}

// NativeBuckets turns a native histogram into cumulative counts by upper bound, as a
// classic histogram's _bucket series read: each listed bucket's upper bound holds
// the observations up to it, and "+Inf" the histogram's count. A native histogram
// lists only buckets that hold observations; the judges read a bound it leaves out
// as holding none beyond the one below it.
func NativeBuckets(h *model.SampleHistogram) (map[string]float64, error) {
	bs := slices.Clone(h.Buckets)
	slices.SortFunc(bs, func(a, b *model.HistogramBucket) int { return cmp.Compare(float64(a.Upper), float64(b.Upper)) })
	out := make(map[string]float64, len(bs)+1)
	var cum float64
	for _, b := range bs {
		c, up := float64(b.Count), float64(b.Upper)
		if math.IsNaN(c) || math.IsInf(c, 0) || math.IsNaN(up) {
			return nil, fmt.Errorf("%w: native histogram bucket (%v, %v] holds %v", ErrNotFinite, b.Lower, b.Upper, c)
		}
		cum += c
		if math.IsInf(up, 1) {
			continue
		}
		out[strconv.FormatFloat(up, 'g', -1, 64)] = cum
	}
	n := float64(h.Count)
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return nil, fmt.Errorf("%w: native histogram count %v", ErrNotFinite, n)
	}
	// The count is at least the buckets' sum (float rounding aside).
	out["+Inf"] = math.Max(n, cum)
	return out, nil
}
