package gateway

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// statusClientClosed is nginx's code for a client that left before the answer. It keeps
// client disconnects apart from 502s, which count against the variant in analysis.
const statusClientClosed = 499

type callKey struct{}

// call carries one request's routing decision into forward (or the shared
// ReverseProxy's hooks) and its outcome back out.
type call struct {
	model, variant, version string
	requestID               string
	metrics                 *variantMetrics
	upstream                *url.URL
	// body is the whole request body when it was small enough to read first; buf
	// holds it when it is in a pooled buffer.
	body []byte
	buf  *bodyBuf
	code int
	// answer holds the start of a 2xx answer, to read its predictions.
	answer *capture

	// w takes interim answers until done (see got1xx); trace asks the Transport for
	// them (in the call, so as not to cost an allocation of its own).
	w     http.ResponseWriter
	trace httptrace.ClientTrace
	mu    sync.Mutex
	done  bool
}

// errSwitchedUnasked is a model server's 101 to a request that asked for no upgrade:
// forwarded, it would leave the client waiting on a protocol it never chose.
var errSwitchedUnasked = errors.New("the model server switched protocols on a request that asked for no upgrade")

func (g *Gateway) newProxy(transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport:  transport,
		BufferPool: copyBuffers{},
		Rewrite: func(pr *httputil.ProxyRequest) {
			c := pr.In.Context().Value(callKey{}).(*call)
			u := *c.upstream // shared by the route's requests: ReverseProxy gets its own
			pr.Out.URL = &u
			pr.Out.Host = "" // the model server's own host, not the gateway's
			if c.body != nil {
				// A body in memory goes out in the same write as the headers, and without
				// the copy buffer a streamed body costs per request.
				pr.Out.Body = io.NopCloser(bytes.NewReader(c.body))
				pr.Out.ContentLength = int64(len(c.body))
			}
			// Rewrite already dropped the client's own X-Forwarded-*, Forwarded and the
			// hop-by-hop headers (those its Connection header lists included).
			pr.SetXForwarded()
			h := pr.Out.Header
			delete(h, ShadowHeader) // only the gateway marks a request as a shadow copy
			h[RequestIDHeader] = []string{c.requestID}
			h["Via"] = append(h["Via"], g.via)
		},
		ModifyResponse: func(resp *http.Response) error {
			c := resp.Request.Context().Value(callKey{}).(*call)
			if resp.StatusCode == http.StatusSwitchingProtocols && resp.Request.Header.Get("Upgrade") == "" {
				return errSwitchedUnasked
			}
			c.code = resp.StatusCode
			// Set on the upstream's headers, so a model server cannot add its own values.
			h := resp.Header
			h[VariantHeader] = c.metrics.variantValue
			h[VersionHeader] = c.metrics.versionValue
			h[RequestIDHeader] = []string{c.requestID}
			if resp.StatusCode >= 200 && resp.StatusCode < 300 && h["Content-Encoding"] == nil {
				c.answer = newCapture(resp.Body)
				resp.Body = c.answer
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.upstreamFailed(w, r, r.Context().Value(callKey{}).(*call), err)
		},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
}

// copyBuffers lends ReverseProxy its copy buffers, which it would otherwise allocate
// (32 KiB) per request.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[32 << 10]byte)[:] }
func (copyBuffers) Put(b []byte) {
	if len(b) == 32<<10 {
		copyBufferPool.Put((*[32 << 10]byte)(b))
	}
}

// upstreamFailed answers a request whose model server gave no answer.
func (g *Gateway) upstreamFailed(w http.ResponseWriter, r *http.Request, c *call, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		c.code = statusClientClosed
		return
	}
	c.code = upstreamErrorCode(err)
	if c.answer != nil {
		c.answer.release()
		c.answer = nil // a body cut off midway is not a prediction
	}
	h := w.Header()
	h.Set(VariantHeader, c.variant)
	h.Set(VersionHeader, c.version)
	h.Set(RequestIDHeader, c.requestID)
	what := "is unreachable"
	if c.code == http.StatusGatewayTimeout {
		what = "did not answer in time"
	}
	g.log.Warn("model server failed", "model", c.model, "variant", c.variant, "version", c.version, "code", c.code, "err", err)
	writeError(w, c.code, fmt.Sprintf("the %s of model %q (version %q) %s", c.variant, c.model, c.version, what))
}

// upstreamErrorCode is the status a client gets when the model server gave no
// complete answer: 504 when it was too slow, 502 otherwise.
func upstreamErrorCode(err error) int {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// serveModel answers /models/{model}/{rest...} from the variant Pick chooses, may
// mirror a champion-served request to the candidate, and reads the answer's
// predictions for the score histogram, the shadow comparison and the feedback join.
func (g *Gateway) serveModel(w http.ResponseWriter, r *http.Request) {
	g.serveModelPath(w, r, r.PathValue("model"), r.PathValue("rest"))
}

// modelPath reads {model} and {rest...} of /models/{model}/{rest...} for a path the
// ServeMux would match without cleaning or unescaping anything, as most are; the
// mux's pattern matching cost ten allocations a request. ok is false for any other
// path, which the mux then serves.
func modelPath(r *http.Request) (model, rest string, ok bool) {
	p := r.URL.Path
	if r.URL.RawPath != "" || r.Method == http.MethodConnect || !strings.HasPrefix(p, "/models/") ||
		strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") {
		return "", "", false
	}
	model, rest, ok = strings.Cut(p[len("/models/"):], "/")
	if !ok || model == "" || model == "." || model == ".." {
		return "", "", false
	}
	return model, rest, true
}

func (g *Gateway) serveModelPath(w http.ResponseWriter, r *http.Request, model, rest string) {
	requestID := g.requestID(r)
	if via := r.Header["Via"]; via != nil && hasToken(via, g.via) {
		// A route leads back to this gateway: answering stops the loop at one lap.
		w.Header().Set(RequestIDHeader, requestID)
		writeError(w, http.StatusLoopDetected, fmt.Sprintf("model %q routes back to this gateway", model))
		return
	}
	rt := (*g.routes.Load())[model]
	if rt == nil {
		w.Header().Set(RequestIDHeader, requestID)
		writeError(w, http.StatusNotFound, fmt.Sprintf("no routes for model %q", model))
		return
	}
	t := &rt.applied.Traffic

	// The global generator draws per P without a lock; a routing key draws the same
	// point every time.
	var u float64
	if key := g.routingKey(r); key != "" && t.Candidate != nil {
		u = drawFrom(rt.stickySeed, key)
	} else {
		u = rand.Float64()
	}
	variant, b := Pick(*t, u)
	c := &call{model: model, variant: variant, version: b.Version, requestID: requestID,
		metrics: rt.metrics[variant], upstream: rt.upstream(variant, rest, r.URL.RawQuery)}
	start := time.Now()
	if r.ContentLength > 0 && r.ContentLength <= g.shadow.opts.MaxBodyBytes {
		if r.ContentLength >= pooledBodyMin && r.Header["Upgrade"] == nil {
			c.buf = getBodyBuf(int(r.ContentLength))
		}
		if c.buf != nil {
			defer c.buf.release()
			c.body = c.buf.b
		} else {
			c.body = make([]byte, r.ContentLength)
		}
		if _, err := io.ReadFull(r.Body, c.body); err != nil {
			c.metrics.observe(modePrimary, statusClientClosed, time.Since(start))
			w.Header().Set(RequestIDHeader, requestID)
			writeError(w, http.StatusBadRequest, "the request body could not be read: "+err.Error())
			return
		}
	}
	var cmp *comparison
	// ShadowShare is checked first so that traffic without a mirror takes one draw.
	if variant == deploy.Champion && t.ShadowShare > 0 && Mirrored(*t, rand.Float64()) {
		cmp = g.mirror(r, c.body, c.buf, rt, rest, requestID)
	}

	func() {
		// Deferred: ReverseProxy panics with http.ErrAbortHandler when the answer breaks
		// off midway, and that request still counts.
		defer func() { c.metrics.observe(modePrimary, c.code, time.Since(start)) }()
		if r.Header["Upgrade"] != nil {
			g.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
		} else {
			g.forward(w, r, c)
		}
	}()
	if c.answer == nil {
		cmp.report(false, nil)
		return
	}
	defer c.answer.release()
	preds, err := ParsePredictions(c.answer.bytes())
	if err != nil {
		cmp.report(false, nil)
		return
	}
	c.metrics.observeScores(modePrimary, preds)
	if len(preds) > 0 && preds[0].Class != "" {
		g.feedback.put(requestID, preds[0].Class, c.metrics)
	}
	cmp.report(false, preds)
}

func (g *Gateway) routingKey(r *http.Request) string {
	if g.routingKeyHeader == "" {
		return ""
	}
	return r.Header.Get(g.routingKeyHeader)
}

// maxRequestIDLen bounds a client's own request ID, which the gateway keeps in memory.
const maxRequestIDLen = 128

// requestID is the client's X-Request-Id when it is a short token, else a new one:
// 128 random bits (crypto/rand), so that no one can guess another client's ID and
// label its prediction first (POST /feedback).
func (g *Gateway) requestID(r *http.Request) string {
	if id := r.Header.Get(RequestIDHeader); id != "" && validRequestID(id) {
		return id
	}
	return cryptorand.Text()
}

func validRequestID(id string) bool {
	if len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// maxCaptureBytes bounds the answer kept for reading predictions; a larger answer is
// still proxied whole, but not scored.
const maxCaptureBytes = 1 << 20

var capturePool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// capture passes an answer through to the client and keeps a copy of it.
type capture struct {
	io.ReadCloser
	buf  *[]byte
	over bool
}

func newCapture(body io.ReadCloser) *capture {
	b := capturePool.Get().(*[]byte)
	*b = (*b)[:0]
	return &capture{ReadCloser: body, buf: b}
}

func (c *capture) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if !c.over {
		if len(*c.buf)+n > maxCaptureBytes {
			c.over = true
		} else {
			*c.buf = append(*c.buf, p[:n]...)
		}
	}
	return n, err
}

// bytes is the whole answer, or nil when it was over the cap.
func (c *capture) bytes() []byte {
	if c.over {
		return nil
	}
	return *c.buf
}

func (c *capture) release() {
	if cap(*c.buf) <= 64<<10 { // keep the pool's buffers small
		capturePool.Put(c.buf)
	}
	c.buf = nil
}

// hasToken says whether a comma-separated header's values list token (any case).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(part), token) {
				return true
			}
		}
	}
	return false
}

// dotSegment returns the first segment of r's path that decodes to "." or "..", or
// whose escapes hide a "/" or "\": a model server (or a proxy behind it) that decodes
// the path would climb out of the model's prefix. ok is false for a clean path.
func dotSegment(r *http.Request) (seg string, ok bool) {
	// RawPath is set only when the path holds escapes other than the default ones.
	p, escaped := r.URL.RawPath, true
	if p == "" {
		p, escaped = r.URL.Path, false
		// The commonest path has no dot segment at all: one scan decides.
		if !strings.Contains(p, "/.") {
			return "", false
		}
	}
	for s := range strings.SplitSeq(p, "/") {
		d := s
		if escaped && strings.IndexByte(s, '%') >= 0 {
			var err error
			if d, err = url.PathUnescape(s); err != nil {
				return s, true
			}
			if strings.ContainsAny(d, `/\`) {
				return s, true
			}
		}
		if d == "." || d == ".." {
			return s, true
		}
	}
	return "", false
}
