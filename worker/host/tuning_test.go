package host

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
)

// The SDK's metrics in Prometheus's names: counters _total, timers histograms in
// seconds; a later use with other tags keeps the first use's labels.
func TestSDKMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newSDKMetrics(reg).WithTags(map[string]string{"namespace": "default", "task_queue": "q"})
	h.Counter("temporal_request").Inc(2)
	h.WithTags(map[string]string{"operation": "Poll"}).Counter("temporal_request").Inc(1) // extra tag dropped
	h.Timer("temporal_workflow_task_schedule_to_start_latency").Record(1500 * time.Millisecond)
	h.Gauge("temporal_worker_task_slots_available").Update(7)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP temporal_request_total Temporal SDK counter temporal_request_total.
# TYPE temporal_request_total counter
temporal_request_total{namespace="default",task_queue="q"} 3
# HELP temporal_worker_task_slots_available Temporal SDK gauge temporal_worker_task_slots_available.
# TYPE temporal_worker_task_slots_available gauge
temporal_worker_task_slots_available{namespace="default",task_queue="q"} 7
`), "temporal_request_total", "temporal_worker_task_slots_available"))
	n, err := testutil.GatherAndCount(reg, "temporal_workflow_task_schedule_to_start_latency_seconds")
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

func TestTuneRefusesNegative(t *testing.T) {
	var o worker.Options
	err := tune(config.Tuning{ActivitySlots: -1}, &o)
	require.ErrorContains(t, err, "MLRELEASE_WORKER_ACTIVITY_SLOTS -1")
	require.NoError(t, tune(config.Tuning{WorkflowPollers: 8, MaxPollers: 32, ActivitySlots: 50, ActivitiesPerSecond: 20}, &o))
	require.Equal(t, 50, o.MaxConcurrentActivityExecutionSize)
	// Local activities (analysis rounds) reach the same Prometheus: the same bounds.
	require.Equal(t, 50, o.MaxConcurrentLocalActivityExecutionSize)
	require.Equal(t, 20.0, o.WorkerLocalActivitiesPerSecond)
	require.NotNil(t, o.WorkflowTaskPollerBehavior)
	require.NotNil(t, o.ActivityTaskPollerBehavior)
}

// A worker started as the binary starts it serves the SDK's metrics (polls,
// slots, schedule-to-start) on /metrics.
func TestWorkerServesSDKMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev, err := devserver.Start(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = dev.Stop() }()
	cfg := config.Worker{TaskQueue: "tuning-test", Registry: "sqlite", RegistryPath: filepath.Join(t.TempDir(), "registry.db"),
		GatewayURL: "http://127.0.0.1:1", PrometheusURL: "http://127.0.0.1:1", Listen: "127.0.0.1:0",
		Tuning: config.Tuning{WorkflowPollers: 4, MaxPollers: 16}}
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, cfg, client.Options{HostPort: dev.FrontendHostPort(), Namespace: "default"}, slog.New(slog.DiscardHandler), ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("worker stopped at start: %v", err)
	}
	// The SDK reports its slots as soon as its pollers start.
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "temporal_worker_task_slots_available{") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no SDK metrics on /metrics:\n%s", body)
		case <-time.After(100 * time.Millisecond):
		}
	}
	stop()
	require.NoError(t, <-done)
}
