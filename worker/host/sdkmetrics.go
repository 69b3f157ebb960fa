package host

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
)

// sdkMetrics is the Temporal SDK's metrics handler on the worker's Prometheus
// registry: schedule-to-start latencies, slots, polls, task and activity latencies,
// sticky cache hits. Names follow Prometheus's conventions: counters end in _total,
// timers are histograms in seconds. A metric's labels are the tags of its first
// use; a later use with other tags fills the missing ones with "" and drops extras,
// so the series stay bounded.
type sdkMetrics struct {
	reg  prometheus.Registerer
	tags map[string]string
	vecs *sdkVecs
}

type sdkVecs struct {
	mu       sync.Mutex
	counters map[string]*labelled[*prometheus.CounterVec]
	gauges   map[string]*labelled[*prometheus.GaugeVec]
	timers   map[string]*labelled[*prometheus.HistogramVec]
}

type labelled[V any] struct {
	vec    V
	labels []string
}

func (l *labelled[V]) values(tags map[string]string) []string {
	out := make([]string, len(l.labels))
	for i, k := range l.labels {
		out[i] = tags[k]
	}
	return out
}

var _ client.MetricsHandler = sdkMetrics{}

func newSDKMetrics(reg prometheus.Registerer) sdkMetrics {
	return sdkMetrics{reg: reg, tags: map[string]string{}, vecs: &sdkVecs{
		counters: map[string]*labelled[*prometheus.CounterVec]{},
		gauges:   map[string]*labelled[*prometheus.GaugeVec]{},
		timers:   map[string]*labelled[*prometheus.HistogramVec]{},
	}}
}

func (h sdkMetrics) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(h.tags)
	maps.Copy(merged, tags)
	return sdkMetrics{reg: h.reg, tags: merged, vecs: h.vecs}
}

func labelsOf(tags map[string]string) []string {
	return slices.Sorted(maps.Keys(tags))
}

func (h sdkMetrics) Counter(name string) client.MetricsCounter {
	if !strings.HasSuffix(name, "_total") {
		name += "_total"
	}
	h.vecs.mu.Lock()
	defer h.vecs.mu.Unlock()
	l, ok := h.vecs.counters[name]
	if !ok {
		labels := labelsOf(h.tags)
		vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: "Temporal SDK counter " + name + "."}, labels)
		if err := h.reg.Register(vec); err != nil {
			return client.MetricsNopHandler.Counter(name)
		}
		l = &labelled[*prometheus.CounterVec]{vec: vec, labels: labels}
		h.vecs.counters[name] = l
	}
	return sdkCounter{l.vec.WithLabelValues(l.values(h.tags)...)}
}

func (h sdkMetrics) Gauge(name string) client.MetricsGauge {
	h.vecs.mu.Lock()
	defer h.vecs.mu.Unlock()
	l, ok := h.vecs.gauges[name]
	if !ok {
		labels := labelsOf(h.tags)
		vec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: "Temporal SDK gauge " + name + "."}, labels)
		if err := h.reg.Register(vec); err != nil {
			return client.MetricsNopHandler.Gauge(name)
		}
		l = &labelled[*prometheus.GaugeVec]{vec: vec, labels: labels}
		h.vecs.gauges[name] = l
	}
	return sdkGauge{l.vec.WithLabelValues(l.values(h.tags)...)}
}

func (h sdkMetrics) Timer(name string) client.MetricsTimer {
	name = strings.TrimSuffix(name, "_latency") + "_latency_seconds"
	h.vecs.mu.Lock()
	defer h.vecs.mu.Unlock()
	l, ok := h.vecs.timers[name]
	if !ok {
		labels := labelsOf(h.tags)
		vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: "Temporal SDK timer " + name + ".",
			// Schedule-to-start and task latencies, from milliseconds to minutes.
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}}, labels)
		if err := h.reg.Register(vec); err != nil {
			return client.MetricsNopHandler.Timer(name)
		}
		l = &labelled[*prometheus.HistogramVec]{vec: vec, labels: labels}
		h.vecs.timers[name] = l
	}
	return sdkTimer{l.vec.WithLabelValues(l.values(h.tags)...)}
}

type sdkCounter struct{ c prometheus.Counter }

func (c sdkCounter) Inc(n int64) { c.c.Add(float64(n)) }

type sdkGauge struct{ g prometheus.Gauge }

func (g sdkGauge) Update(v float64) { g.g.Set(v) }

type sdkTimer struct{ o prometheus.Observer }

func (t sdkTimer) Record(d time.Duration) { t.o.Observe(d.Seconds()) }
