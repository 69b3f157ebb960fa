package host

import (
	"fmt"
	"maps"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/signing"
	"github.com/mlrelease/mlrelease/workflows"
)

// loadTrust reads the worker's allowed signers and its Slack bridge key. Both are
// optional; a file that is set but unreadable or invalid stops the worker, since
// running without the trust the operator configured would be worse.
func loadTrust(cfg config.Worker) (workflows.WorkerTrust, ssh.Signer, error) {
	var wt workflows.WorkerTrust
	if path := cfg.AllowedSigners; path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return wt, nil, fmt.Errorf("MLRELEASE_ALLOWED_SIGNERS: %w", err)
		}
		if len(b) > workflows.MaxTrustText {
			return wt, nil, fmt.Errorf("MLRELEASE_ALLOWED_SIGNERS %s is %d bytes, more than the %d a release carries", path, len(b), workflows.MaxTrustText)
		}
		signers, err := signing.ParseAllowedSigners(b)
		if err != nil {
			return wt, nil, fmt.Errorf("MLRELEASE_ALLOWED_SIGNERS %s: %w", path, err)
		}
		if len(signers) == 0 {
			return wt, nil, fmt.Errorf("MLRELEASE_ALLOWED_SIGNERS %s lists no keys", path)
		}
		wt.AllowedSigners = string(b)
	}
	var bridge ssh.Signer
	if path := cfg.Slack.BridgeKey; path != "" {
		var err error
		if bridge, err = signing.LoadSigner(path); err != nil {
			return wt, nil, fmt.Errorf("MLRELEASE_SLACK_BRIDGE_KEY: %w", err)
		}
		wt.SlackBridge = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(bridge.PublicKey())))
	}
	return wt, bridge, nil
}

// newRefusedCounter is mlrelease_decisions_refused_total: every decision refused,
// by where it was refused (workflow: a release's validator; slack: the interaction
// endpoint), the decision and the reason.
func newRefusedCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: workflows.MetricRefused,
		Help: "Decisions refused, by where (workflow validator or Slack endpoint), decision kind and reason (unsigned, bad_signature, unknown_key, other_run, replayed, expired, not_allowed, invalid, ...).",
	}, []string{"source", "kind", "reason"})
}

// refusalMetrics is the SDK's metrics handler: it passes MetricRefused, which the
// release's validators count through workflow.GetMetricsHandler (replay-safe), to
// its Prometheus counter, and the SDK's own metrics to next (none when nil).
type refusalMetrics struct {
	tags    map[string]string
	refused *prometheus.CounterVec
	next    client.MetricsHandler
}

func (h refusalMetrics) others() client.MetricsHandler {
	if h.next == nil {
		return client.MetricsNopHandler
	}
	return h.next
}

var _ client.MetricsHandler = refusalMetrics{}

func (h refusalMetrics) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(h.tags)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, tags)
	return refusalMetrics{tags: merged, refused: h.refused, next: h.others().WithTags(tags)}
}

func (h refusalMetrics) Counter(name string) client.MetricsCounter {
	if name != workflows.MetricRefused {
		return h.others().Counter(name)
	}
	return counter{h.refused.WithLabelValues(h.tags["source"], h.tags["kind"], h.tags["reason"])}
}

func (h refusalMetrics) Gauge(name string) client.MetricsGauge { return h.others().Gauge(name) }

func (h refusalMetrics) Timer(name string) client.MetricsTimer { return h.others().Timer(name) }

type counter struct{ c prometheus.Counter }

func (c counter) Inc(n int64) { c.c.Add(float64(n)) }
