package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

// upstreamClient is the gateway's HTTP/1.1 client for plain-http model servers. It
// writes a request and reads its answer on the caller's goroutine over a pool of
// keep-alive connections per upstream address, where net/http's Transport hands each
// request to a read and a write goroutine per connection: on a proxy doing nothing
// else per request, those hand-offs were the largest cost after the syscalls.
//
// A connection goes back to its pool only when its answer was read to the end and
// allows keep-alive. A request that fails on a reused idle connection before any byte
// of the answer arrived (the model server had closed it) is sent once more on a new
// connection when its body is in memory, as net/http does; never after a byte of the
// answer was read.
type upstreamClient struct {
	dialer net.Dialer
	// headerTimeout bounds the wait for the answer's headers once the request is sent.
	headerTimeout time.Duration
	// idleTimeout closes connections idle for longer; maxIdle caps them per address.
	idleTimeout time.Duration
	maxIdle     int

	pools sync.Map // address (host:port) → *connPool
}

func newUpstreamClient() *upstreamClient {
	return &upstreamClient{
		// As http.DefaultTransport, and defaultTransport's header timeout.
		dialer:        net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		headerTimeout: time.Minute,
		idleTimeout:   90 * time.Second,
		maxIdle:       256,
	}
}

// upstreamRequest is one request to send. Only a body in memory (or none) can be
// sent again; a streamed one cannot.
type upstreamRequest struct {
	method string
	// target is the absolute URL; its host is the Host header and, with the default
	// port, the address dialled.
	uri, host, addr string
	// header is sent without hop-by-hop headers, Host, Content-Length, Expect and the
	// names in extra, which replace the client's values.
	header http.Header
	extra  []headerField
	// extraBuf backs extra when a caller has few, without an allocation.
	extraBuf [4]headerField
	// dropForwarded drops the client's own Forwarded and X-Forwarded-* headers.
	dropForwarded bool
	body          []byte
	// stream, when not nil, is the body instead: length bytes, or chunked when -1.
	stream io.Reader
	length int64
}

type headerField struct{ key, value string }

func (q *upstreamRequest) replayable() bool { return q.stream == nil }

// upstreamAddr is the address to dial for an http URL's host.
func upstreamAddr(host, port string) string {
	if port != "" {
		return host
	}
	return host + ":80"
}

func (c *upstreamClient) pool(addr string) *connPool {
	if p, ok := c.pools.Load(addr); ok {
		return p.(*connPool)
	}
	p, _ := c.pools.LoadOrStore(addr, &connPool{client: c, addr: addr})
	return p.(*connPool)
}

// roundTrip sends q and returns the answer once its headers are read. Its Body must be
// read to the end or closed; ctx ending aborts the call, body included, and the error
// is then ctx's.
func (c *upstreamClient) roundTrip(ctx context.Context, q *upstreamRequest) (*http.Response, error) {
	p := c.pool(q.addr)
	for attempt := 0; ; attempt++ {
		var uc *upConn
		if attempt == 0 {
			uc = p.get()
		}
		reused := uc != nil
		if !reused {
			nc, err := c.dialer.DialContext(ctx, "tcp", q.addr)
			if err != nil {
				return nil, ctxErr(ctx, err)
			}
			uc = newUpConn(nc, p)
		}
		resp, err := uc.do(ctx, q)
		if err == nil {
			return resp, nil
		}
		uc.close()
		var ne net.Error
		retry := reused && !uc.readAny && q.replayable() && ctx.Err() == nil && !(errors.As(err, &ne) && ne.Timeout())
		if !retry {
			return nil, ctxErr(ctx, err)
		}
	}
}

// closeIdle closes every idle connection.
func (c *upstreamClient) closeIdle() {
	c.pools.Range(func(_, v any) bool {
		v.(*connPool).closeIdle()
		return true
	})
}

// ctxErr is ctx's error once it has ended: closing the connection is how an ended
// context stops a call, and the error of that close says nothing about the upstream.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// connPool holds one address's idle connections, the most recently used last.
type connPool struct {
	client *upstreamClient
	addr   string

	mu    sync.Mutex
	idle  []*upConn
	timer *time.Timer // pending pruneIdle while any connection is idle
}

func (p *connPool) get() *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		uc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if time.Since(uc.idleSince) < p.client.idleTimeout {
			return uc
		}
		uc.close()
	}
	return nil
}

func (p *connPool) put(uc *upConn) {
	uc.idleSince = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= p.client.maxIdle {
		uc.close()
		return
	}
	p.idle = append(p.idle, uc)
	if p.timer == nil {
		p.timer = time.AfterFunc(p.client.idleTimeout, p.pruneIdle)
	}
}

// pruneIdle closes connections idle past the timeout (the oldest are first), and
// runs again while any connection is idle.
func (p *connPool) pruneIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.idle) && time.Since(p.idle[n].idleSince) >= p.client.idleTimeout {
		p.idle[n].close()
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) == 0 {
		p.timer = nil
		return
	}
	p.timer.Reset(p.client.idleTimeout - time.Since(p.idle[0].idleSince))
}

func (p *connPool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, uc := range p.idle {
		uc.close()
	}
	clear(p.idle)
	p.idle = p.idle[:0]
}

// upConn is one connection to a model server, used by one request at a time.
type upConn struct {
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	pool      *connPool
	idleSince time.Time
	// readAny says whether any byte arrived for the current request.
	readAny bool
}

func newUpConn(nc net.Conn, p *connPool) *upConn {
	uc := &upConn{nc: nc, pool: p}
	uc.br = bufio.NewReader(uc)
	uc.bw = bufio.NewWriter(nc)
	return uc
}

// Read feeds br and notes whether the answer has begun.
func (uc *upConn) Read(b []byte) (int, error) {
	n, err := uc.nc.Read(b)
	if n > 0 {
		uc.readAny = true
	}
	return n, err
}

func (uc *upConn) close() { _ = uc.nc.Close() }

// headRequest tells http.ReadResponse that an answer has no body; for every other
// method nil reads it as the headers say.
var headRequest = &http.Request{Method: http.MethodHead}

func (uc *upConn) do(ctx context.Context, q *upstreamRequest) (*http.Response, error) {
	// Closing the connection unblocks a read or write when the client goes or the
	// call's deadline passes; the connection is then never reused.
	stop := context.AfterFunc(ctx, uc.close)
	uc.readAny = false
	if uc.br.Buffered() > 0 {
		stop()
		return nil, errors.New("model server sent data on an idle connection")
	}
	if err := q.write(uc.bw); err != nil {
		stop()
		return nil, err
	}
	var req *http.Request
	if q.method == http.MethodHead {
		req = headRequest
	}
	if uc.pool.client.headerTimeout > 0 {
		_ = uc.nc.SetReadDeadline(time.Now().Add(uc.pool.client.headerTimeout))
	}
	var resp *http.Response
	for {
		var err error
		if resp, err = http.ReadResponse(uc.br, req); err != nil {
			stop()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("timeout awaiting response headers: %w", err)
			}
			return nil, err
		}
		// An interim answer (100 Continue, 103 Early Hints) precedes the real one.
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	// The deadline was for the headers. A body already in the buffer needs no more
	// reads, and the next request sets its own deadline first: leave it then (a
	// deadline set costs as much as a small read).
	if uc.pool.client.headerTimeout > 0 && (resp.ContentLength < 0 || int64(uc.br.Buffered()) < resp.ContentLength) {
		_ = uc.nc.SetReadDeadline(time.Time{})
	}
	resp.Request = nil
	b := &upBody{uc: uc, body: resp.Body, stop: stop, ctx: ctx, keepAlive: !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols}
	if resp.Body == http.NoBody {
		b.finish(nil)
	}
	resp.Body = b
	return resp, nil
}

// upBody is an answer's body; read to the end, it returns the connection to the pool.
type upBody struct {
	uc        *upConn
	body      io.ReadCloser
	stop      func() bool
	ctx       context.Context
	keepAlive bool
	err       error // set once done: io.EOF, or why the body ended early
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	if err != nil {
		if err != io.EOF {
			err = ctxErr(b.ctx, err)
		}
		b.finish(err)
	}
	return n, err
}

// finish ends the body with err (nil: there was none), and reuses or closes the
// connection. Nothing may touch the connection afterwards: another request may have it.
func (b *upBody) finish(err error) {
	if err == nil {
		err = io.EOF
	}
	b.err = err
	// stop is false when the context has ended and the connection is closed.
	if b.stop() && err == io.EOF && b.keepAlive && b.uc.br.Buffered() == 0 {
		b.uc.pool.put(b.uc)
	} else {
		b.uc.close()
	}
}

// Close gives up on the rest of the body, and the connection with it.
func (b *upBody) Close() error {
	if b.err == nil {
		b.finish(errors.New("body closed before its end"))
	}
	return nil
}

// write sends q in one buffered write when its body fits the buffer.
func (q *upstreamRequest) write(bw *bufio.Writer) error {
	bw.WriteString(q.method)
	bw.WriteByte(' ')
	bw.WriteString(q.uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(q.host)
	bw.WriteString("\r\n")
	connection := q.header["Connection"]
	for k, vv := range q.header {
		if q.skip(k, connection) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	// "Te: trailers" says the client takes trailers, which the gateway passes on.
	if hasToken(q.header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	for _, f := range q.extra {
		bw.WriteString(f.key)
		bw.WriteString(": ")
		bw.WriteString(f.value)
		bw.WriteString("\r\n")
	}
	chunked := false
	switch {
	case q.stream != nil && q.length < 0:
		chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case q.stream != nil:
		writeContentLength(bw, q.length)
	case len(q.body) > 0 || q.method == http.MethodPost || q.method == http.MethodPut || q.method == http.MethodPatch:
		writeContentLength(bw, int64(len(q.body)))
	}
	bw.WriteString("\r\n")
	switch {
	case chunked:
		cw := httputil.NewChunkedWriter(bw)
		if _, err := io.Copy(cw, q.stream); err != nil {
			return fmt.Errorf("send request body: %w", err)
		}
		_ = cw.Close()
		bw.WriteString("\r\n") // no trailers
	case q.stream != nil:
		if n, err := io.CopyN(bw, q.stream, q.length); err != nil {
			return fmt.Errorf("send request body: %d of %d bytes: %w", n, q.length, err)
		}
	default:
		bw.Write(q.body)
	}
	return bw.Flush()
}

func writeContentLength(bw *bufio.Writer, n int64) {
	bw.WriteString("Content-Length: ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), n, 10))
	bw.WriteString("\r\n")
}

// skip says whether the client's header k stays behind: hop-by-hop headers (those
// standard ones, and those the Connection header names), headers the request writes
// itself, and those extra replaces.
func (q *upstreamRequest) skip(k string, connection []string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Expect":
		return true
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		if q.dropForwarded {
			return true
		}
	}
	for _, f := range q.extra {
		if f.key == k {
			return true
		}
	}
	return len(connection) > 0 && hasToken(connection, k)
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
		if len(connection) > 0 && hasToken(connection, k) {
			continue
		}
		dst[k] = vv
	}
}
