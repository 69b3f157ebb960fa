package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Modes of a request, as the "mode" label says: answered to the client, or mirrored.
const (
	modePrimary = "primary"
	modeShadow  = "shadow"
)

// metrics are labelled only with values an admin set (model, variant, version), plus
// the HTTP status and mode: requests for unknown models are not recorded, so a client
// cannot create series by inventing paths.
type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	shadowDropped   *prometheus.CounterVec
	candidateWeight *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_requests_total",
			Help: "Requests sent to model servers, by variant, version, mode (primary or shadow) and HTTP status; 502 when the model server could not be reached.",
		}, []string{"model", "variant", "version", "mode", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mlrelease_gateway_request_duration_seconds",
			Help: "Time from receiving a request to the end of the model server's answer.",
			// Model latency spans cached lookups (~1ms) to large models (seconds).
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"model", "variant", "version", "mode"}),
		shadowDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_shadow_dropped_total",
			Help: "Shadow copies not sent because the queue was full or the body was over the cap.",
		}, []string{"model"}),
		candidateWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mlrelease_gateway_candidate_weight_ratio",
			Help: "Share (0..1) of live requests the candidate answers.",
		}, []string{"model"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.shadowDropped, m.candidateWeight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(model, variant, version, mode string, code int, took time.Duration) {
	m.requests.WithLabelValues(model, variant, version, mode, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(model, variant, version, mode).Observe(took.Seconds())
}
