package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// Modes of a request, as the "mode" label says: answered to the client, or mirrored.
const (
	modePrimary = "primary"
	modeShadow  = "shadow"
)

// metrics are labelled only with values an admin set (model, variant, version), plus
// the HTTP status, mode and a few fixed outcomes: requests for unknown models are not
// recorded, so a client cannot create series by inventing paths or request IDs.
type metrics struct {
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	shadowDropped   *prometheus.CounterVec
	candidateWeight *prometheus.GaugeVec
	score           *prometheus.HistogramVec
	comparisons     *prometheus.CounterVec
	feedback        *prometheus.CounterVec
	feedbackMisses  *prometheus.CounterVec
	feedbackExpired *prometheus.CounterVec
}

// Outcomes of a shadow comparison and of a feedback label.
const (
	resultAgree      = "agree"
	resultDisagree   = "disagree"
	outcomeCorrect   = "correct"
	outcomeIncorrect = "incorrect"
	missUnknown      = "unknown"
	missExpired      = "expired"
	expiredAge       = "age"
	expiredCapacity  = "capacity"
)

// NativeHistogramBucketFactor is the growth between neighbouring buckets of the
// latency's native histogram: 1.1 gives schema 3, bounds 2^(1/8) apart.
const NativeHistogramBucketFactor = 1.1

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_requests_total",
			Help: "Requests sent to model servers, by variant, version, mode (primary or shadow) and HTTP status; 502 when the model server could not be reached, 504 when it did not answer in time.",
		}, []string{"model", "variant", "version", "mode", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mlrelease_gateway_request_duration_seconds",
			Help: "Time from receiving a request to the end of the model server's answer.",
			// Model latency spans cached lookups (~1ms) to large models (seconds).
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
			// The classic buckets are 2-2.5x apart, too coarse for a latency judge with a
			// 10% tolerance; the native histogram (scraped when Prometheus runs with
			// --enable-feature=native-histograms) has buckets 2^(1/8) = 9% apart
			// (schema 3). Its bucket count is capped: past it, the client halves the
			// resolution (never resets the counts: no MinResetDuration) rather than
			// grow without bound; 1 ms to 10 s takes 107 buckets.
			NativeHistogramBucketFactor:    NativeHistogramBucketFactor,
			NativeHistogramMaxBucketNumber: 160,
		}, []string{"model", "variant", "version", "mode"}),
		shadowDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_shadow_dropped_total",
			Help: "Shadow copies not sent because the queue was full or the body was over the cap.",
		}, []string{"model"}),
		candidateWeight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mlrelease_gateway_candidate_weight_ratio",
			Help: "Share (0..1) of live requests the candidate answers.",
		}, []string{"model"}),
		score: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mlrelease_gateway_prediction_score",
			Help: "Prediction scores in 0..1, one per predicted row: the largest class probability when the model gives probabilities, else x/(1+x) of a numeric prediction x (0 when negative). Compare variants' buckets for output drift (PSI, Jensen-Shannon).",
			// Equal-width bins, as PSI and Jensen-Shannon over buckets assume.
			Buckets: scoreBuckets(),
		}, []string{"model", "variant", "version", "mode"}),
		comparisons: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_shadow_comparisons_total",
			Help: "Shadow rows compared with the primary's answer to the same request, by the candidate's version: agree when the class is equal (numbers: within the tolerance).",
		}, []string{"model", "version", "result"}),
		feedback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_feedback_total",
			Help: "Feedback labels joined with the prediction served for their request, by the variant that served it and whether it was correct.",
		}, []string{"model", "variant", "version", "outcome"}),
		feedbackMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_feedback_join_misses_total",
			Help: "Feedback that joined no stored prediction: an unknown (or already labelled) request ID, or a prediction past its expiry.",
		}, []string{"reason"}),
		feedbackExpired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mlrelease_gateway_feedback_expired_total",
			Help: "Stored predictions dropped before any feedback arrived: past their age limit, or evicted to stay within capacity.",
		}, []string{"model", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.shadowDropped, m.candidateWeight,
		m.score, m.comparisons, m.feedback, m.feedbackMisses, m.feedbackExpired} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{missUnknown, missExpired} {
		m.feedbackMisses.WithLabelValues(r) // export zeros, so a rate has a baseline
	}
	return m, nil
}

// scoreBuckets are 0.05, 0.1, ..., 1: computed as i/20 so that the le labels read as
// written (LinearBuckets accumulates rounding: 0.8000000000000002).
func scoreBuckets() []float64 {
	b := make([]float64, 20)
	for i := range b {
		b[i] = float64(i+1) / 20
	}
	return b
}

func (m *metrics) observe(model, variant, version, mode string, code int, took time.Duration) {
	m.requests.WithLabelValues(model, variant, version, mode, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(model, variant, version, mode).Observe(took.Seconds())
}

// variantMetrics are one variant's series, looked up once per route rather than per
// request: label lookups hash every label value and showed up in the gateway's profile.
type variantMetrics struct {
	model, variant, version string
	// variantValue and versionValue are the answer's header values, shared by every
	// answer (full slices: an append copies them).
	variantValue, versionValue []string

	ok          [2]prometheus.Counter  // 200s, by mode
	duration    [2]prometheus.Observer // by mode
	score       [2]prometheus.Observer // by mode
	correct     prometheus.Counter
	incorrect   prometheus.Counter
	agree       prometheus.Counter // the candidate's comparisons
	disagree    prometheus.Counter
	expiredAge  prometheus.Counter
	expiredRoom prometheus.Counter
	requests    *prometheus.CounterVec
}

func modeIndex(mode string) int {
	if mode == modeShadow {
		return 1
	}
	return 0
}

func (m *metrics) forVariant(model, variant, version string) *variantMetrics {
	v := &variantMetrics{model: model, variant: variant, version: version, requests: m.requests,
		variantValue: []string{variant}[:1:1], versionValue: []string{version}[:1:1]}
	for i, mode := range []string{modePrimary, modeShadow} {
		if mode == modeShadow && variant != deploy.Candidate {
			v.ok[i], v.duration[i], v.score[i] = v.ok[0], v.duration[0], v.score[0] // never used
			continue
		}
		v.ok[i] = m.requests.WithLabelValues(model, variant, version, mode, "200")
		v.duration[i] = m.duration.WithLabelValues(model, variant, version, mode)
		v.score[i] = m.score.WithLabelValues(model, variant, version, mode)
	}
	v.correct = m.feedback.WithLabelValues(model, variant, version, outcomeCorrect)
	v.incorrect = m.feedback.WithLabelValues(model, variant, version, outcomeIncorrect)
	if variant == deploy.Candidate {
		v.agree = m.comparisons.WithLabelValues(model, version, resultAgree)
		v.disagree = m.comparisons.WithLabelValues(model, version, resultDisagree)
	}
	v.expiredAge = m.feedbackExpired.WithLabelValues(model, expiredAge)
	v.expiredRoom = m.feedbackExpired.WithLabelValues(model, expiredCapacity)
	return v
}

func (v *variantMetrics) observe(mode string, code int, took time.Duration) {
	i := modeIndex(mode)
	if code == 200 {
		v.ok[i].Inc()
	} else {
		v.requests.WithLabelValues(v.model, v.variant, v.version, mode, strconv.Itoa(code)).Inc()
	}
	v.duration[i].Observe(took.Seconds())
}

func (v *variantMetrics) observeScores(mode string, preds []Prediction) {
	o := v.score[modeIndex(mode)]
	for _, p := range preds {
		if p.HasScore {
			o.Observe(p.Score)
		}
	}
}
