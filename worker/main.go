// Command worker hosts ReleaseWorkflow and its activities, and serves /metrics.
//
// Temporal connection settings come from TEMPORAL_* variables (or the Temporal CLI's
// config file and profiles); mlrelease's own from MLRELEASE_* variables.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/worker/host"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var cfg config.Worker
	err := config.Load(&cfg)
	var opts client.Options
	if err == nil {
		opts, err = envconfig.LoadDefaultClientOptions()
	}
	if err == nil {
		err = host.Run(ctx, cfg, opts, logger, nil)
	}
	if err != nil {
		logger.Error("worker stopped", "error", err)
		os.Exit(1)
	}
}
