// Command loadgen sends random rows of a dataset, one per request, to a model
// endpoint at a target rate with bounded concurrency, and logs a summary every 10s.
// Through the gateway it also sends each row's true label to POST /feedback after a
// delay (as ground truth arrives in production), and spreads requests over users.
//
//	go run ./examples/demo/loadgen -url http://127.0.0.1:8080/models/wine/invocations -rate 20
package main

import (
	"context"
	"flag"
	"log/slog"
	neturl "net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mlrelease/mlrelease/examples/demo/load"
	"github.com/mlrelease/mlrelease/internal/scoring"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/models/wine/invocations", "full invocations URL")
	data := flag.String("data", "examples/demo/data/wine.csv", "CSV dataset whose rows are sent")
	rate := flag.Float64("rate", 20, "target requests per second (0: as fast as -concurrency allows)")
	concurrency := flag.Int("concurrency", 8, "most requests in flight")
	duration := flag.Duration("duration", 0, "stop after this long (0: until SIGINT)")
	requests := flag.Int("requests", 0, "stop after this many requests (0: no limit)")
	seed := flag.Uint64("seed", 1, "seed of the row choice")
	timeout := flag.Duration("timeout", 10*time.Second, "timeout of each request")
	every := flag.Duration("report-every", 10*time.Second, "interval of progress logs")
	feedbackURL := flag.String("feedback-url", "auto", `where true labels go ("auto": /feedback on the -url's host; "": none)`)
	feedbackDelay := flag.Duration("feedback-delay", 5*time.Second, "how long after each answer its true label is sent")
	users := flag.Int("users", 200, "simulated users, sent in X-User-ID for sticky routing (0: none)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ds, err := scoring.LoadCSV(*data)
	if err != nil {
		log.Error("loadgen failed", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if *feedbackURL == "auto" {
		*feedbackURL = ""
		if u, err := neturl.Parse(*url); err == nil && u.Host != "" {
			*feedbackURL = (&neturl.URL{Scheme: u.Scheme, Host: u.Host, Path: "/feedback"}).String()
		}
	}
	log.Info("sending load", "url", *url, "rows", len(ds.Rows), "rate", *rate, "concurrency", *concurrency,
		"duration", *duration, "requests", *requests, "feedback_url", *feedbackURL, "feedback_delay", *feedbackDelay, "users", *users)
	sum, err := load.Run(ctx, load.Options{
		URL: *url, Dataset: ds, Rate: *rate, Concurrency: *concurrency, Requests: *requests,
		Seed: *seed, RequestTimeout: *timeout, ReportEvery: *every, Logger: log,
		FeedbackURL: *feedbackURL, FeedbackDelay: *feedbackDelay, Users: *users,
	})
	if err != nil {
		log.Error("loadgen failed", "err", err)
		os.Exit(1)
	}
	log.Info("load done", "sent", sum.Sent, "ok", sum.OK, "errors", sum.Errors, "labels", sum.Labels, "label_errors", sum.LabelErrors)
}
