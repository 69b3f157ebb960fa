package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// shadowCopy is one request to replay against the candidate. It owns its body and
// headers: the original request is gone by the time a worker sends it.
type shadowCopy struct {
	method string
	target *url.URL
	header http.Header
	body   []byte
	// buf, when not nil, holds body; the copy has a reference to it.
	buf *bodyBuf
	// cost is what the copy holds against ShadowOptions.MaxQueuedBytes until sent.
	cost    int64
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
	metrics   *metrics
	log       *slog.Logger
	// held is the bytes of the copies queued or in flight, within opts.MaxQueuedBytes.
	held atomic.Int64

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
				mr.held.Add(-c.cost)
			}
		})
	}
	return mr
}

// mirror queues a copy of r, whose body is body when already read, for the candidate
// and returns the comparison the primary reports to, or nil when the copy was dropped.
// Otherwise it buffers r's body up to the cap and leaves r.Body reading the same
// bytes, so the primary sees the request unchanged.
func (g *Gateway) mirror(r *http.Request, body []byte, buf *bodyBuf, rt *route, rest, requestID string) *comparison {
	model := rt.applied.Model
	if q := g.shadow.queue; len(q) == cap(q) || g.shadow.held.Load()+max(r.ContentLength, 0) > g.shadow.opts.MaxQueuedBytes {
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
		target:  rt.upstream(deploy.Candidate, rest, r.URL.RawQuery),
		header:  g.shadowHeader(r, requestID),
		body:    body,
		buf:     buf,
	}
	c.cost = shadowOverhead + int64(len(body)) + headerBytes(c.header)
	if buf != nil {
		buf.hold()
	}
	if !g.shadow.offer(c) {
		if buf != nil {
			buf.release()
		}
		g.metrics.shadowDropped.WithLabelValues(model).Inc()
		return nil
	}
	return c.cmp
}

// shadowOverhead is what a queued copy costs beside its body and headers: the copy,
// its comparison, URL and the request the worker builds.
const shadowOverhead = 1 << 10

// shadowHeader is the header of r's copy: the client's end-to-end headers, without the
// hop-by-hop ones (those r's Connection lists included) or the client's own
// Forwarded and X-Forwarded-*, which the gateway sets from the real peer as for the
// primary.
func (g *Gateway) shadowHeader(r *http.Request, requestID string) http.Header {
	h := make(http.Header, len(r.Header)+4)
	connection := r.Header["Connection"]
	for k, vv := range r.Header {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade",
			"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", ShadowHeader, "Expect":
			continue
		}
		if connection != nil && hasToken(connection, k) {
			continue
		}
		h[k] = slices.Clone(vv)
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h["X-Forwarded-For"] = []string{ip}
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h["X-Forwarded-Host"] = []string{r.Host}
	h["X-Forwarded-Proto"] = []string{proto}
	h[ShadowHeader] = []string{"true"}
	h[RequestIDHeader] = []string{requestID}
	h["Via"] = append(h["Via"], g.via)
	return h
}

func headerBytes(h http.Header) int64 {
	n := 0
	for k, vv := range h {
		for _, v := range vv {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}

// offer queues c unless the queue is full, its bytes would go over the budget, or the
// mirror is shut down.
func (m *mirror) offer(c shadowCopy) bool {
	if m.held.Add(c.cost) > m.opts.MaxQueuedBytes {
		m.held.Add(-c.cost)
		return false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.closed {
		select {
		case m.queue <- c:
			return true
		default:
		}
	}
	m.held.Add(-c.cost)
	return false
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

// roundTrip sends c. Like the primary, a shadow does not follow redirects.
func (m *mirror) roundTrip(ctx context.Context, c shadowCopy) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, c.method, c.target.String(), bytes.NewReader(c.body))
	if err != nil {
		if c.buf != nil {
			c.buf.release()
		}
		return nil, err
	}
	if c.buf != nil {
		// The copy's reference passes to the body, which the Transport closes.
		req.Body = &bodyBufReader{Reader: bytes.NewReader(c.body), bb: c.buf}
		req.GetBody = nil
	}
	if len(c.body) == 0 && c.method != http.MethodPost && c.method != http.MethodPut && c.method != http.MethodPatch {
		req.Body, req.ContentLength = http.NoBody, 0
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
