package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// shadowCopy is one request to replay against the candidate. It owns its body and
// headers: the original request is gone by the time a worker sends it.
type shadowCopy struct {
	model, version string
	method, url    string
	header         http.Header
	body           []byte
}

// mirror sends shadow copies from a bounded queue with a fixed set of workers. The
// primary path only ever does a non-blocking send, so a slow or dead candidate can
// cost dropped copies but never primary latency.
type mirror struct {
	opts      ShadowOptions
	transport http.RoundTripper
	metrics   *metrics
	log       *slog.Logger

	// mu guards closed against offers racing with shutdown closing the queue.
	mu      sync.RWMutex
	closed  bool
	queue   chan shadowCopy
	workers sync.WaitGroup
	// ctx is cancelled when shutdown gives up waiting, aborting calls in flight.
	ctx    context.Context
	cancel context.CancelFunc
}

func newMirror(opts ShadowOptions, transport http.RoundTripper, m *metrics, log *slog.Logger) *mirror {
	ctx, cancel := context.WithCancel(context.Background())
	mr := &mirror{
		opts: opts, transport: transport, metrics: m, log: log,
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

// mirror queues a copy of r for the candidate. It buffers r's body up to the cap and
// leaves r.Body reading the same bytes, so the primary sees the request unchanged.
func (g *Gateway) mirror(r *http.Request, rt *route, rest string) {
	model := rt.applied.Model
	body, err := io.ReadAll(io.LimitReader(r.Body, g.shadow.opts.MaxBodyBytes+1))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
	if err != nil || int64(len(body)) > g.shadow.opts.MaxBodyBytes {
		g.metrics.shadowDropped.WithLabelValues(model).Inc()
		return
	}
	c := shadowCopy{
		model:   model,
		version: rt.applied.Candidate.Version,
		method:  r.Method,
		url:     upstreamURL(rt.targets[deploy.Candidate], rest, r.URL.RawQuery).String(),
		header:  r.Header.Clone(),
		body:    body,
	}
	for _, h := range hopHeaders {
		c.header.Del(h)
	}
	c.header.Set(ShadowHeader, "true")
	if !g.shadow.offer(c) {
		g.metrics.shadowDropped.WithLabelValues(model).Inc()
	}
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
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, bytes.NewReader(c.body))
	if err == nil {
		req.Header = c.header
		var resp *http.Response
		// RoundTrip rather than a Client: like the primary, a shadow does not follow
		// redirects.
		if resp, err = m.transport.RoundTrip(req); err == nil {
			// Read the answer so the timeout covers it and the connection is reused;
			// comparing it with the champion's is a later step.
			_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, m.opts.MaxBodyBytes))
			resp.Body.Close()
			code = resp.StatusCode
		}
	}
	if m.ctx.Err() != nil {
		return // abandoned at shutdown: says nothing about the candidate
	}
	if err != nil {
		m.log.Debug("shadow copy failed", "model", c.model, "version", c.version, "err", err)
	}
	m.metrics.observe(c.model, deploy.Candidate, c.version, modeShadow, code, time.Since(start))
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
