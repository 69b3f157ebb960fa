package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// Value runs an instant query at time at. It returns nil when the result is empty or
// NaN (no data), ErrQueryRejected when Prometheus refuses the query or it returns more
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
	if math.IsNaN(f) {
		return nil, nil
	}
	return &f, nil
}

// Buckets runs an instant query at time at whose result is one series per histogram
// bucket ("sum by (le) (..._bucket{...})") and returns the values by their "le"
// label. An empty result is an empty map (no data); a series without "le" makes the
// query rejected.
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
		return nil, fmt.Errorf("%w: %s returned a %s; want one series per bucket (sum by (le) of a _bucket counter)", ErrQueryRejected, query, v.Type())
	}
	out := make(map[string]float64, len(vec))
	for _, s := range vec {
		le, ok := s.Metric[model.BucketLabel]
		if !ok {
			return nil, fmt.Errorf("%w: %s returned a series without an \"le\" label; aggregate it with sum by (le)", ErrQueryRejected, query)
		}
		if f := float64(s.Value); !math.IsNaN(f) {
			out[string(le)] = f
		}
	}
	return out, nil
}
