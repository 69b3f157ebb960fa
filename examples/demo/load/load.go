// Package load sends a steady stream of prediction requests, one random dataset row
// each, to a model endpoint: the live traffic that a demo release analyses. It can
// also send each row's true label to the gateway's POST /feedback after a delay, as
// ground truth arrives in production, and spread requests over simulated users.
package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// Options configure Run. URL and Dataset are required.
type Options struct {
	// URL is the full invocations URL, e.g. http://127.0.0.1:8080/models/wine/invocations.
	URL     string
	Dataset *scoring.Dataset
	// Rate is the target number of requests per second; 0 sends as fast as
	// Concurrency allows. When every slot is busy the rate falls rather than queueing.
	Rate float64
	// Concurrency bounds the requests in flight; 0 means 4.
	Concurrency int
	// Requests stops Run after this many requests; 0 runs until ctx is done.
	Requests int
	// Seed picks the rows.
	Seed uint64
	// Client sends the requests; nil means a zero scoring.Client.
	Client *scoring.Client
	// RequestTimeout bounds each request; 0 means 10s.
	RequestTimeout time.Duration
	// ReportEvery is the interval of progress logs; 0 means 10s.
	ReportEvery time.Duration
	// Logger receives the progress logs; nil discards them.
	Logger *slog.Logger

	// FeedbackURL, when set (e.g. http://127.0.0.1:8080/feedback), receives each
	// answered row's true label, FeedbackDelay after the answer, joined by the
	// request's X-Request-Id. Labels still waiting when ctx ends are not sent.
	FeedbackURL   string
	FeedbackDelay time.Duration
	// Users, when above 0, sends each request as one of that many users (in the
	// UserHeader, default X-User-ID), so a gateway can keep each user on one variant.
	Users      int
	UserHeader string
}

// RequestIDHeader carries the ID that feedback refers to; the gateway keeps a
// client's own ID.
const RequestIDHeader = "X-Request-Id"

// Summary counts what Run sent. Sent = OK + the sum of Errors.
type Summary struct {
	Sent int `json:"sent"`
	OK   int `json:"ok"`
	// Errors counts failed requests by HTTP status ("503") or "transport" for
	// requests that got no answer.
	Errors map[string]int `json:"errors"`
	// Labels counts feedback the gateway accepted; LabelErrors feedback it refused or
	// that got no answer.
	Labels      int `json:"labels"`
	LabelErrors int `json:"label_errors"`
}

func (s *Summary) add(err error) {
	s.Sent++
	if err == nil {
		s.OK++
		return
	}
	key := "transport"
	var se *scoring.StatusError
	if errors.As(err, &se) {
		key = strconv.Itoa(se.StatusCode)
	}
	s.Errors[key]++
}

func (s Summary) minus(prev Summary) Summary {
	d := Summary{Sent: s.Sent - prev.Sent, OK: s.OK - prev.OK, Errors: map[string]int{},
		Labels: s.Labels - prev.Labels, LabelErrors: s.LabelErrors - prev.LabelErrors}
	for k, v := range s.Errors {
		if v != prev.Errors[k] {
			d.Errors[k] = v - prev.Errors[k]
		}
	}
	return d
}

func (s Summary) clone() Summary {
	c := s
	c.Errors = make(map[string]int, len(s.Errors))
	for k, v := range s.Errors {
		c.Errors[k] = v
	}
	return c
}

// Run sends requests until opts.Requests are sent or ctx is done, then waits for the
// requests in flight (they are not cut short by ctx, so every sent request is counted
// with its real outcome) and returns the totals. Ending by ctx is not an error.
func Run(ctx context.Context, opts Options) (Summary, error) {
	if opts.URL == "" || opts.Dataset == nil || len(opts.Dataset.Rows) == 0 {
		return Summary{}, errors.New("load: need a URL and a dataset with rows")
	}
	if opts.Rate < 0 || opts.Concurrency < 0 || opts.Requests < 0 || opts.Users < 0 || opts.FeedbackDelay < 0 {
		return Summary{}, fmt.Errorf("load: rate %v, concurrency %d, requests %d, users %d and feedback delay %v must not be negative",
			opts.Rate, opts.Concurrency, opts.Requests, opts.Users, opts.FeedbackDelay)
	}
	if opts.FeedbackURL != "" && len(opts.Dataset.Labels) != len(opts.Dataset.Rows) {
		return Summary{}, errors.New("load: feedback needs the dataset's labels")
	}
	userHeader := opts.UserHeader
	if userHeader == "" {
		userHeader = "X-User-ID"
	}
	conc := opts.Concurrency
	if conc == 0 {
		conc = 4
	}
	timeout := opts.RequestTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	every := opts.ReportEvery
	if every == 0 {
		every = 10 * time.Second
	}
	client := opts.Client
	if client == nil {
		client = &scoring.Client{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ds := opts.Dataset
	rng := rand.New(rand.NewPCG(opts.Seed, 0x6c6f6164))

	var (
		mu    sync.Mutex
		total = Summary{Errors: map[string]int{}}
		wg    sync.WaitGroup
		// labels waiting for their delay; they end with ctx, unlike requests in flight
		pendingLabels sync.WaitGroup
	)
	// Request IDs unique across runs: a run prefix and the request's number.
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	snapshot := func() Summary {
		mu.Lock()
		defer mu.Unlock()
		return total.clone()
	}

	// progress logs: what the last interval did and the totals so far
	reportDone := make(chan struct{})
	reportStopped := make(chan struct{})
	go func() {
		defer close(reportStopped)
		t := time.NewTicker(every)
		defer t.Stop()
		prev := Summary{Errors: map[string]int{}}
		for {
			select {
			case <-reportDone:
				return
			case <-t.C:
				now := snapshot()
				d := now.minus(prev)
				log.Info("load progress", "interval", every, "sent", d.Sent, "ok", d.OK, "errors", d.Errors,
					"labels", d.Labels, "label_errors", d.LabelErrors,
					"total_sent", now.Sent, "total_ok", now.OK, "total_errors", now.Errors)
				prev = now
			}
		}
	}()

	var tick <-chan time.Time
	if opts.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / opts.Rate))
		defer t.Stop()
		tick = t.C
	}
	slots := make(chan struct{}, conc)
	// In-flight requests outlive ctx (bounded by their timeout) so they are counted.
	reqCtx := context.WithoutCancel(ctx)
send:
	for i := 0; opts.Requests == 0 || i < opts.Requests; i++ {
		if tick != nil {
			select {
			case <-ctx.Done():
				break send
			case <-tick:
			}
		}
		select {
		case <-ctx.Done():
			break send
		case slots <- struct{}{}:
		}
		if ctx.Err() != nil {
			<-slots
			break send
		}
		idx := rng.IntN(len(ds.Rows))
		row := ds.Rows[idx]
		reqClient := client
		requestID := ""
		if opts.FeedbackURL != "" || opts.Users > 0 {
			c := *client
			c.Header = client.Header.Clone()
			if c.Header == nil {
				c.Header = http.Header{}
			}
			if opts.FeedbackURL != "" {
				requestID = "load-" + runID + "-" + strconv.Itoa(i)
				c.Header.Set(RequestIDHeader, requestID)
			}
			if opts.Users > 0 {
				c.Header.Set(userHeader, "user-"+strconv.Itoa(rng.IntN(opts.Users)))
			}
			reqClient = &c
		}
		wg.Go(func() {
			defer func() { <-slots }()
			rctx, cancel := context.WithTimeout(reqCtx, timeout)
			defer cancel()
			_, err := reqClient.Invoke(rctx, opts.URL, &scoring.Request{
				DataframeSplit: &scoring.DataframeSplit{Columns: ds.Columns, Data: [][]float64{row}},
			})
			mu.Lock()
			total.add(err)
			mu.Unlock()
			if err != nil || requestID == "" {
				return
			}
			pendingLabels.Go(func() {
				t := time.NewTimer(opts.FeedbackDelay)
				defer t.Stop()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				fctx, cancel := context.WithTimeout(reqCtx, timeout)
				defer cancel()
				err := sendLabel(fctx, client.HTTP, opts.FeedbackURL, requestID, ds.Labels[idx])
				if err != nil {
					log.Debug("feedback not accepted", "request_id", requestID, "err", err)
				}
				mu.Lock()
				if err != nil {
					total.LabelErrors++
				} else {
					total.Labels++
				}
				mu.Unlock()
			})
		})
	}
	wg.Wait()
	pendingLabels.Wait()
	close(reportDone)
	<-reportStopped
	return snapshot(), nil
}

// sendLabel posts one true label to the gateway's feedback endpoint.
func sendLabel(ctx context.Context, hc *http.Client, url, requestID, label string) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	body, err := json.Marshal(map[string]any{"request_id": requestID, "label": scoring.Prediction(label)})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("feedback answered %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
