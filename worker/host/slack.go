package host

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/notify"
	mlslack "github.com/mlrelease/mlrelease/internal/slack"
)

// SlackInteractionsPath is where the worker takes Slack's signed interaction requests.
const SlackInteractionsPath = "/slack/interactions"

func slackConfig(cfg config.Worker, logger *slog.Logger) mlslack.Config {
	return mlslack.Config{Slack: cfg.Slack, WebUIURL: cfg.WebUIURL, ReportURL: cfg.ReportURL, Logger: logger.With("component", "slack")}
}

// notifier is Slack when it is configured, else the log. A Slack setting that is
// wrong is logged and falls back to the log: Slack never stops a release.
func notifier(cfg config.Worker, logger *slog.Logger) notify.Notifier {
	log := notify.Log{Logger: logger.With("component", "notifier")}
	if !cfg.Slack.Enabled() {
		return log
	}
	n, err := mlslack.NewNotifier(slackConfig(cfg, logger))
	if err != nil {
		logger.Warn("Slack notifications off", "error", err.Error())
		return log
	}
	logger.Info("Slack notifications on", "slack", cfg.Slack.String())
	return n
}

// serveSlack takes approval clicks: on mux at SlackInteractionsPath when a signing
// secret is set, and over Socket Mode when an app token is set.
func serveSlack(ctx context.Context, mux *http.ServeMux, c client.Client, cfg config.Worker, logger *slog.Logger,
	bridge ssh.Signer, refused *prometheus.CounterVec) {
	if !cfg.Slack.Enabled() || (cfg.Slack.SigningSecret == "" && cfg.Slack.AppToken == "") {
		return
	}
	sc := slackConfig(cfg, logger)
	sc.Refused = func(kind, reason string) { refused.WithLabelValues("slack", kind, reason).Inc() }
	if bridge == nil {
		logger.Warn("Slack clicks are sent unsigned: set MLRELEASE_SLACK_BRIDGE_KEY, or releases that check signatures refuse them")
	}
	h, err := mlslack.NewHandler(ctx, sc, mlslack.TemporalDecider{Client: c, Bridge: bridge})
	if err != nil {
		logger.Warn("Slack approvals off", "error", err.Error())
		return
	}
	if cfg.Slack.SigningSecret != "" {
		mux.Handle(SlackInteractionsPath, h)
		logger.Info("Slack interactions over HTTP", "path", SlackInteractionsPath)
	}
	if cfg.Slack.AppToken != "" {
		go func() { _ = h.RunSocketMode(ctx, sc) }()
		logger.Info("Slack interactions over Socket Mode")
	}
}
