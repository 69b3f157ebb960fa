package analysis_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/analysis"
)

// prometheusBinary is bin/prometheus (make prometheus) or prometheus on the PATH.
func prometheusBinary(t *testing.T) string {
	if p, err := filepath.Abs("../../bin/prometheus"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("prometheus")
	require.NoError(t, err, "Prometheus is needed: run `make prometheus`")
	return p
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// A real Prometheus with native histograms scrapes a histogram with the gateway's
// native options; Buckets reads it as cumulative counts by upper bound, 9% apart.
func TestPrometheusNativeHistogramBuckets(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "latency_seconds", Help: "test",
		Buckets:                     []float64{.1, .25, .5, 1},
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160,
	}, []string{"variant"})
	reg.MustRegister(h)
	for range 100 {
		h.WithLabelValues("candidate").Observe(0.05)
	}
	for range 10 {
		h.WithLabelValues("candidate").Observe(0.3)
	}
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer target.Close()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(
		"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: t\n    static_configs:\n      - targets: [%q]\n", target.Listener.Addr().String())), 0o644))
	listen := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prometheusBinary(t), "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn", "--enable-feature=native-histograms")
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	p, err := analysis.NewPrometheus("http://" + listen)
	require.NoError(t, err)
	var got map[string]float64
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + listen + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		got, err = p.Buckets(ctx, `sum(latency_seconds{variant="candidate"})`, time.Now())
		return err == nil && got["+Inf"] == 110
	}, 45*time.Second, 200*time.Millisecond, "a native histogram of 110 observations; last read %v", got)

	// 0.05 lies in (2^(-35/8), 2^(-34/8)] = (0.0482, 0.0526]; 0.3 in (0.2973, 0.3242].
	var at05, at03 float64
	for k, v := range got {
		b, err := strconv.ParseFloat(k, 64)
		require.NoError(t, err)
		switch {
		case b > 0.05 && b < 0.0527:
			at05 = v
		case b > 0.3 && b < 0.3243:
			at03 = v
		}
	}
	assert.Equal(t, 100.0, at05, "%v", got)
	assert.Equal(t, 110.0, at03, "%v", got)

	_, err = p.Buckets(ctx, `latency_seconds`, time.Now())
	assert.NoError(t, err, "one series: the candidate's")
	h.WithLabelValues("champion").Observe(1)
	require.Eventually(t, func() bool {
		_, err = p.Buckets(ctx, `latency_seconds`, time.Now())
		return err != nil
	}, 10*time.Second, 200*time.Millisecond)
	assert.ErrorIs(t, err, analysis.ErrQueryRejected, "two native histograms must be summed")
}
