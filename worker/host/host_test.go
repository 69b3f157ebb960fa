package host

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
)

// TestRunServesMetricsAndSlack starts the worker as the binary does, with Slack
// configured, against a real dev server: /metrics answers, the Slack interaction
// endpoint is wired and refuses an unsigned request, and the worker stops with its
// context.
func TestRunServesMetricsAndSlack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev, err := devserver.Start(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = dev.Stop() }()
	fake := slacktest.NewTestServer()
	fake.Start()
	defer fake.Stop()

	cfg := config.Worker{
		TaskQueue:     "host-test",
		Registry:      "sqlite",
		RegistryPath:  filepath.Join(t.TempDir(), "registry.db"),
		GatewayURL:    "http://127.0.0.1:1",
		PrometheusURL: "http://127.0.0.1:1",
		Listen:        "127.0.0.1:0",
		WebUIURL:      "http://localhost:8233",
		Slack: config.Slack{BotToken: "xoxb-host-test", Channel: "C0RELEASES",
			SigningSecret: "host-test-signing-secret", APIURL: fake.GetAPIURL()},
	}
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, cfg, client.Options{HostPort: dev.FrontendHostPort(), Namespace: "default"},
			slog.New(slog.DiscardHandler), ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("worker stopped at start: %v", err)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = http.Post("http://"+addr+SlackInteractionsPath, "application/x-www-form-urlencoded",
		bytes.NewBufferString("payload=%7B%7D"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "an unsigned interaction is refused")

	stop()
	require.NoError(t, <-done)
}
