// Command modelserver serves one demo weights file with MLflow's scoring protocol
// (POST /invocations, GET /ping, GET /version) and can misbehave on purpose: answer a
// share of requests 503, add latency, or corrupt its weights.
//
//	go run ./examples/demo/modelserver -model examples/demo/models/v1.json -listen 127.0.0.1:5001
//
// Every flag can also be set by an environment variable MODELSERVER_<FLAG>, dashes
// as underscores (MODELSERVER_ERROR_RATE=0.2); a flag on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mlrelease/mlrelease/examples/demo/model"
)

func main() {
	fs := flag.NewFlagSet("modelserver", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:5001", "address to serve on")
	weights := fs.String("model", "examples/demo/models/v1.json", "weights file to serve")
	version := fs.String("version", "", "version label for /version (default: the weights file's version)")
	errorRate := fs.Float64("error-rate", 0, "share (0..1) of invocations answered 503")
	latency := fs.Duration("latency", 0, "latency added to every invocation, e.g. 50ms")
	degrade := fs.Float64("degrade", 0, "corrupt the weights by this amount (0..1); 0.5 costs about a third of the accuracy")
	seed := fs.Uint64("seed", 1, "seed of the injected errors and of the weight corruption")
	debug := fs.Bool("debug", false, "log every invocation")
	_ = fs.Parse(os.Args[1:])
	if err := envDefaults(fs, "MODELSERVER_"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(log, *listen, *weights, model.ServerOptions{
		Version: *version, ErrorRate: *errorRate, Latency: *latency,
		Degrade: *degrade, Seed: *seed, Logger: log,
	}); err != nil {
		log.Error("model server failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, listen, weightsPath string, opts model.ServerOptions) error {
	w, err := model.Load(weightsPath)
	if err != nil {
		return err
	}
	opts.Weights = w
	if opts.Version == "" {
		opts.Version = w.Version
	}
	h, err := model.NewServer(opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("serving model", "listen", listen, "model", weightsPath, "model_version", w.Version,
		"version", opts.Version, "error_rate", opts.ErrorRate, "latency", opts.Latency,
		"degrade", opts.Degrade, "seed", opts.Seed)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// envDefaults sets every flag not given on the command line from the environment
// variable prefix+FLAG_NAME, if that is set.
func envDefaults(fs *flag.FlagSet, prefix string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		key := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok && !given[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", key, v, e)
			}
		}
	})
	return err
}
