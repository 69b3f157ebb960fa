package gateway

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// forward is the primary call to a plain-http model server through the gateway's own
// client; it does what the ReverseProxy (still used for https model servers, upgrade
// requests and a configured Transport) does, without its per-request copies.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *call) {
	q := upstreamRequest{
		method:        r.Method,
		uri:           c.upstream.RequestURI(),
		host:          c.upstream.Host,
		addr:          upstreamAddr(c.upstream.Host, c.upstream.Port()),
		header:        r.Header,
		dropForwarded: true,
		body:          c.body,
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	q.extra = q.extraBuf[:0]
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		q.extra = append(q.extra, headerField{"X-Forwarded-For", ip})
	}
	q.extra = append(q.extra, headerField{"X-Forwarded-Host", r.Host}, headerField{"X-Forwarded-Proto", proto},
		headerField{RequestIDHeader, c.requestID})
	if c.body == nil && r.ContentLength != 0 {
		q.stream, q.length = r.Body, r.ContentLength
	}

	resp, err := g.client.roundTrip(r.Context(), &q)
	if err != nil {
		g.upstreamFailed(w, r, c, err)
		return
	}
	c.code = resp.StatusCode
	h := w.Header()
	copyAnswerHeader(h, resp.Header)
	// Set on the upstream's headers, so a model server cannot add its own values.
	h[VariantHeader] = c.metrics.variantValue
	h[VersionHeader] = c.metrics.versionValue
	h[RequestIDHeader] = []string{c.requestID}
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	var body io.ReadCloser = resp.Body
	if resp.StatusCode >= 200 && resp.StatusCode < 300 && resp.Header["Content-Encoding"] == nil {
		c.answer = newCapture(body)
		body = c.answer
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyAnswer(w, body, flushesAtOnce(resp)); err != nil {
		body.Close()
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
	if len(resp.Trailer) > 0 {
		// As ReverseProxy: chunk the answer, so the trailers can follow it.
		_ = http.NewResponseController(w).Flush()
		for k, vv := range resp.Trailer {
			h[k] = vv
		}
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

var copyBuffers = sync.Pool{New: func() any { return new([16 << 10]byte) }}

// copyAnswer copies body to w to its end, flushing each piece when flush is set.
func copyAnswer(w http.ResponseWriter, body io.Reader, flush bool) error {
	buf := copyBuffers.Get().(*[16 << 10]byte)
	defer copyBuffers.Put(buf)
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
