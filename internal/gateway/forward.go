package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
)

// forward is the primary call for every request that asks for no protocol upgrade: it
// hands the request to the Transport (net/http's by default) itself, as ReverseProxy
// would, without ReverseProxy's per-request copies of the request, its context and
// its header. Upgrade requests go through the ReverseProxy (g.proxy), which knows how
// to splice the two connections.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *call) {
	out := &http.Request{
		Method:     r.Method,
		URL:        c.upstream,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     g.upstreamHeader(r, c.requestID),
	}
	switch {
	case c.buf != nil:
		out.Body = c.buf.reader()
		out.ContentLength = int64(len(c.body))
	case c.body != nil:
		// io.NopCloser over a bytes.Reader is a body the Transport knows is in memory:
		// it then sends the headers and the body in one write, not two.
		out.Body = io.NopCloser(bytes.NewReader(c.body))
		out.ContentLength = int64(len(c.body))
	case r.ContentLength != 0:
		out.Body = r.Body // streamed: -1 is sent chunked
		out.ContentLength = r.ContentLength
	}
	// Interim answers (103 Early Hints) go to the client as they come; net/http's
	// Transport drops them unless a trace asks for them.
	c.w = w
	c.trace.Got1xxResponse = c.got1xx
	out = out.WithContext(httptrace.WithClientTrace(r.Context(), &c.trace))

	resp, err := g.transport.RoundTrip(out)
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
	if err != nil {
		g.upstreamFailed(w, r, c, err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body.Close()
		g.upstreamFailed(w, r, c, errSwitchedUnasked)
		return
	}
	c.code = resp.StatusCode
	h := w.Header()
	copyAnswerHeader(h, resp.Header)
	// Set on the upstream's headers, so a model server cannot add its own values.
	h[VariantHeader] = c.metrics.variantValue
	h[VersionHeader] = c.metrics.versionValue
	h[RequestIDHeader] = out.Header[RequestIDHeader] // read-only, as the Transport left it
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	var body io.ReadCloser = resp.Body
	if resp.StatusCode >= 200 && resp.StatusCode < 300 && resp.Header["Content-Encoding"] == nil {
		c.answer = newCapture(body)
		body = c.answer
	}
	w.WriteHeader(resp.StatusCode)
	err = copyAnswer(w, body, flushesAtOnce(resp))
	body.Close()
	if err != nil {
		if c.answer != nil {
			c.answer.release()
			c.answer = nil // a body cut off midway is not a prediction
		}
		g.log.Debug("answer broke off", "model", c.model, "variant", c.variant, "err", err)
		// As ReverseProxy: under an http.Server, abort the response so the client sees
		// it cut off rather than complete.
		if r.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

// got1xx passes an interim answer to the client, until the final answer has come.
func (c *call) got1xx(code int, header textproto.MIMEHeader) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil
	}
	h := c.w.Header()
	for k, vv := range header {
		h[k] = vv
	}
	c.w.WriteHeader(code)
	clear(h) // WriteHeader does not clear them for a 1xx
	return nil
}

// upstreamHeader is the header of r's call to a model server: the client's end-to-end
// headers, without the hop-by-hop ones (those r's Connection lists included), the
// client's own Forwarded and X-Forwarded-* (set again from the real peer), and any
// shadow mark. Values are shared with r, which the Transport does not change.
func (g *Gateway) upstreamHeader(r *http.Request, requestID string) http.Header {
	h := make(http.Header, len(r.Header)+6)
	connection := r.Header["Connection"]
	for k, vv := range r.Header {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade",
			"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", ShadowHeader,
			// The client's 100-continue was answered by this server when the body was
			// read; asked again, a model server that never says 100 would hold the body
			// back for the Transport's ExpectContinueTimeout.
			"Expect":
			continue
		}
		if connection != nil && hasToken(connection, k) {
			continue
		}
		h[k] = vv
	}
	// "Te: trailers" says the client takes trailers, which the gateway passes on.
	if te := r.Header["Te"]; te != nil && hasToken(te, "trailers") {
		h["Te"] = teTrailers
	}
	if h["User-Agent"] == nil {
		h["User-Agent"] = noUserAgent // else the Transport would send Go's own
	}
	// One backing array for the values this call sets; each a full slice, so an
	// append elsewhere copies rather than overwrites its neighbour.
	vals := make([]string, 4)
	vals[0], vals[1], vals[3] = r.Host, requestID, g.via
	h["X-Forwarded-Host"] = vals[0:1:1]
	h[RequestIDHeader] = vals[1:2:2]
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		vals[2] = ip
		h["X-Forwarded-For"] = vals[2:3:3]
	}
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = protoHTTPS
	} else {
		h["X-Forwarded-Proto"] = protoHTTP
	}
	if via := h["Via"]; via != nil {
		h["Via"] = append(via[:len(via):len(via)], g.via)
	} else {
		h["Via"] = vals[3:4:4]
	}
	return h
}

// Shared header values, never changed (full slices: an append copies them).
var (
	teTrailers  = []string{"trailers"}[:1:1]
	noUserAgent = []string{""}[:1:1]
	protoHTTP   = []string{"http"}[:1:1]
	protoHTTPS  = []string{"https"}[:1:1]
)

// copyAnswerHeader copies an answer's end-to-end headers to dst. The value slices are
// shared, not copied: the answer is not used after.
func copyAnswerHeader(dst, src http.Header) {
	connection := src["Connection"]
	for k, vv := range src {
		switch k {
		case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
			"Te", "Trailer", "Transfer-Encoding", "Upgrade":
			continue
		}
		if connection != nil && hasToken(connection, k) {
			continue
		}
		dst[k] = vv
	}
}

// flushesAtOnce says whether each piece of the answer goes to the client as it comes,
// as ReverseProxy does: a streamed answer of unknown length, or server-sent events.
func flushesAtOnce(resp *http.Response) bool {
	if resp.ContentLength == -1 {
		return true
	}
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// copyAnswer copies body to w to its end, flushing each piece when flush is set.
func copyAnswer(w http.ResponseWriter, body io.Reader, flush bool) error {
	buf := copyBufferPool.Get().(*[32 << 10]byte)
	defer copyBufferPool.Put(buf)
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := body.Read(buf[:])
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if flush {
				if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
