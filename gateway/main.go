// Command gateway serves mlrelease's data plane: model traffic split between champion
// and candidate (sticky per routing key), the shadow mirror and its prediction
// comparison, POST /feedback, the admin API the release workflow drives, and /metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/gateway"
)

// defaultMemoryLimit is the gateway's soft memory limit when GOMEMLIMIT is not set.
const defaultMemoryLimit = 512 << 20

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("gateway stopped", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	if os.Getenv("GOGC") == "" {
		// A proxy's live heap is small and its garbage is per request: collecting at 4x
		// the live heap rather than 2x halves the GC's share of CPU for a few MB.
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// GOGC=400 lets a heap of buffered bodies grow to 5x before a collection; a
		// soft limit makes the collector work harder instead once the process nears
		// it. The shadow queue's own bound (MLRELEASE_GATEWAY_SHADOW_MAX_BYTES) keeps
		// the live heap well below it; set GOMEMLIMIT to change it.
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	var cfg config.Gateway
	if err := config.Load(&cfg); err != nil {
		return err
	}

	// The other replicas, when this gateway has some (MLRELEASE_GATEWAY_PEERS).
	peers := deploy.NewGateway(cfg.Peers, cfg.AdminToken, nil)
	var peerList func(context.Context) ([]string, error)
	if cfg.Peers != "" {
		peerList = peers.Replicas
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gw, err := gateway.New(gateway.Options{
		AdminToken:       cfg.AdminToken,
		Registerer:       reg,
		Gatherer:         reg,
		Logger:           log,
		StateFile:        cfg.StateFile,
		RoutingKeyHeader: cfg.RoutingKeyHeader,
		Shadow: gateway.ShadowOptions{Timeout: cfg.ShadowTimeout, QueueSize: cfg.ShadowQueue,
			MaxQueuedBytes: cfg.ShadowMaxBytes},
		Feedback: gateway.FeedbackOptions{TTL: cfg.FeedbackTTL, Capacity: cfg.FeedbackCapacity, Token: cfg.FeedbackToken},
		Peers:    peerList,
	})
	if err != nil {
		return err
	}
	if cfg.Peers != "" {
		// Before listening: a replica serves its peers' newest routes from its first
		// request, not from the next release step.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		list, err := peers.Replicas(ctx)
		if err == nil {
			var n int
			n, err = gw.SyncFromPeers(ctx, list, cfg.AdminToken)
			log.Info("routes synced from peers", "peers", len(list), "models_adopted", n)
		}
		cancel()
		if err != nil {
			log.Warn("routes not synced from peers; serving the state file's", "peers", cfg.Peers, "error", err)
		}
	}

	srv := &http.Server{
		Handler:           gw.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ReadTimeout:       time.Minute,
		// Longer than the upstream's one-minute response-header timeout, so a slow model
		// gets a 502 from the gateway rather than a cut connection.
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (MLRELEASE_GATEWAY_LISTEN): %w", cfg.Listen, err)
	}
	log.Info("gateway listening", "addr", ln.Addr().String(), "admin_token_set", cfg.AdminToken != "",
		"state_file", cfg.StateFile, "routing_key_header", cfg.RoutingKeyHeader,
		"shadow_max_bytes", cfg.ShadowMaxBytes, "memory_limit", debug.SetMemoryLimit(-1))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	gw.Drain() // readiness fails first, so a load balancer stops sending
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return errors.Join(err, gw.Shutdown(shutdownCtx))
}
