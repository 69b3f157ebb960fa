package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// shadowCopy is one request to replay against the candidate. It owns its body and
// headers: the original request is gone by the time a worker sends it.
type shadowCopy struct {
	method  string
	target  *url.URL
	header  http.Header
	body    []byte
	metrics *variantMetrics // the candidate's
	cmp     *comparison
}

// comparison pairs the primary's predictions for one request with the shadow's; the
// second side to report compares them, so neither waits for the other.
type comparison struct {
	tol     float64
	metrics *variantMetrics // the candidate's

	mu              sync.Mutex
	reported        int
	primary, shadow []Prediction
}

// report gives one side's predictions, nil when that side failed or gave none.
func (c *comparison) report(shadow bool, preds []Prediction) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if shadow {
		c.shadow = preds
	} else {
		c.primary = preds
	}
	c.reported++
	done := c.reported == 2 && c.primary != nil && c.shadow != nil
	c.mu.Unlock()
	if !done {
		return
	}
	// Rows beyond the shorter answer have nothing to agree with.
	for i := range max(len(c.primary), len(c.shadow)) {
		if i < len(c.primary) && i < len(c.shadow) && Agree(c.primary[i], c.shadow[i], c.tol) {
			c.metrics.agree.Inc()
		} else {
			c.metrics.disagree.Inc()
		}
	}
}

// mirror sends shadow copies from a bounded queue with a fixed set of workers. The
// primary path only ever does a non-blocking send, so a slow or dead candidate can
// cost dropped copies but never primary latency.
type mirror struct {
	opts      ShadowOptions
	transport http.RoundTripper
	// client, when not nil, sends the copies to plain-http candidates.
	client  *upstreamClient
	metrics *metrics
	log     *slog.Logger

	// mu guards closed against offers racing with shutdown closing the queue.
	mu      sync.RWMutex
	closed  bool
	queue   chan shadowCopy
	workers sync.WaitGroup
	// ctx is cancelled when shutdown gives up waiting, aborting calls in flight.
	ctx    context.Context
	cancel context.CancelFunc
}

func newMirror(opts ShadowOptions, transport http.RoundTripper, client *upstreamClient, m *metrics, log *slog.Logger) *mirror {
	ctx, cancel := context.WithCancel(context.Background())
	mr := &mirror{
		opts: opts, transport: transport, client: client, metrics: m, log: log,
		queue: make(chan shadowCopy, opts.QueueSize),
		ctx:   ctx, cancel: cancel,
	}
	for range opts.Workers {
		mr.workers.Go(func() {
			for c := range mr.queue {
				mr.send(c)
			}
		})
	}
	return mr
}

// mirror queues a copy of r, whose body is body when already read, for the candidate
// and returns the comparison the primary reports to, or nil when the copy was dropped.
// Otherwise it buffers r's body up to the cap and leaves r.Body reading the same
// bytes, so the primary sees the request unchanged.
func (g *Gateway) mirror(r *http.Request, body []byte, rt *route, rest, requestID string) *comparison {
	model := rt.applied.Model
	if q := g.shadow.queue; len(q) == cap(q) {
		// Full (a slow candidate): drop before copying anything, so the primary pays
		// nothing for a copy that would be dropped anyway.
		g.metrics.shadowDropped.WithLabelValues(model).Inc()
		return nil
	}
	var err error
	if body == nil && r.ContentLength != 0 {
		// A body of unknown length (or over the cap): read up to the cap.
		body, err = io.ReadAll(io.LimitReader(r.Body, g.shadow.opts.MaxBodyBytes+1))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
	}
	if err != nil || int64(len(body)) > g.shadow.opts.MaxBodyBytes {
		g.metrics.shadowDropped.WithLabelValues(model).Inc()
		return nil
	}
	vm := rt.metrics[deploy.Candidate]
	c := shadowCopy{
		metrics: vm,
		cmp:     &comparison{tol: g.tolerance, metrics: vm},
		method:  r.Method,
		target:  upstreamURL(rt.targets[deploy.Candidate], rest, r.URL.RawQuery),
		header:  r.Header.Clone(),
		body:    body,
	}
	for _, h := range hopHeaders {
		c.header.Del(h)
	}
	c.header.Set(ShadowHeader, "true")
	c.header.Set(RequestIDHeader, requestID)
	if !g.shadow.offer(c) {
		g.metrics.shadowDropped.WithLabelValues(model).Inc()
		return nil
	}
	return c.cmp
}

// hopHeaders belong to one connection and must not be replayed on another.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// offer queues c unless the queue is full or the mirror is shut down.
func (m *mirror) offer(c shadowCopy) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return false
	}
	select {
	case m.queue <- c:
		return true
	default:
		return false
	}
}

func (m *mirror) send(c shadowCopy) {
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.Timeout)
	defer cancel()
	start := time.Now()
	code := http.StatusBadGateway
	var answer []byte
	resp, err := m.roundTrip(ctx, c)
	if err == nil {
		// Read the whole answer so the timeout covers it and the connection is reused.
		answer, err = io.ReadAll(io.LimitReader(resp.Body, m.opts.MaxBodyBytes))
		resp.Body.Close()
		code = resp.StatusCode
	}
	if err != nil {
		code = upstreamErrorCode(err)
	}
	if m.ctx.Err() != nil {
		return // abandoned at shutdown: says nothing about the candidate
	}
	vm := c.metrics
	if err != nil {
		m.log.Debug("shadow copy failed", "model", vm.model, "version", vm.version, "err", err)
	}
	vm.observe(modeShadow, code, time.Since(start))
	var preds []Prediction
	if err == nil && code >= 200 && code < 300 {
		if preds, err = ParsePredictions(answer); err == nil {
			vm.observeScores(modeShadow, preds)
		}
	}
	c.cmp.report(true, preds)
}

// roundTrip sends c by the gateway's client to a plain-http candidate, else by the
// transport. Like the primary, a shadow does not follow redirects.
func (m *mirror) roundTrip(ctx context.Context, c shadowCopy) (*http.Response, error) {
	if m.client != nil && c.target.Scheme == "http" {
		return m.client.roundTrip(ctx, &upstreamRequest{
			method: c.method,
			uri:    c.target.RequestURI(),
			host:   c.target.Host,
			addr:   upstreamAddr(c.target.Host, c.target.Port()),
			header: c.header,
			body:   c.body,
		})
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.target.String(), bytes.NewReader(c.body))
	if err != nil {
		return nil, err
	}
	req.Header = c.header
	return m.transport.RoundTrip(req)
}

func (m *mirror) shutdown(ctx context.Context) error {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.queue)
	}
	m.mu.Unlock()

	done := make(chan struct{})
	go func() { m.workers.Wait(); close(done) }()
	defer m.cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		m.cancel()
		<-done
		return ctx.Err()
	}
}
