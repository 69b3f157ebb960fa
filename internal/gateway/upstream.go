package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"
)

// UpstreamTransport reaches model servers. Plain-HTTP calls whose body is in memory
// (all the gateway's own, except streamed bodies) go over HTTP/1.1 connections that
// the calling goroutine writes and reads itself, with net/http's own wire code:
// Request.Write frames the request, http.ReadResponse parses and frames the answer.
// net/http's Transport does the same work through a reader and a writer goroutine per
// connection, and the hand-offs between them and the caller cost more CPU per request
// than the rest of the gateway together. Everything else (https and HTTP/2, protocol
// upgrades, streamed and large bodies) goes to Fallback, net/http's Transport.
//
// It keeps the guarantees the Transport gives (the conformance suite checks them): a
// connection is reused only when its answer ended exactly where its framing said,
// nothing more was buffered and, checked again when it is taken for the next request,
// nothing more (and no close) has arrived since; a request that may have reached the
// model server is never sent again (only a GET, HEAD, OPTIONS or TRACE without a body
// is, and only when it failed on a reused connection before any answer came); answer
// headers, interim answers' included, are bounded; interim answers reach the caller's
// httptrace.ClientTrace.Got1xxResponse.
//
// Set the fields before the first call; they are not to be changed after.
type UpstreamTransport struct {
	// Fallback makes the calls this transport leaves to net/http: https, upgrades,
	// and bodies of unknown length or over MaxInMemoryBody.
	Fallback *http.Transport
	// Dial opens connections to model servers.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxInMemoryBody is the largest request body this transport sends itself; the
	// gateway holds such bodies in memory.
	MaxInMemoryBody int64
	// MaxIdleConnsPerHost bounds the idle connections kept per model server.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes a connection idle this long.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an answer's headers once the request
	// is written; 0 means no bound.
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds an answer's headers, interim answers' included.
	MaxResponseHeaderBytes int64

	mu   sync.Mutex
	idle map[string][]*upstreamConn // by host:port, the most recently used last
}

// Interim answers one request may get before its final answer, as net/http allows.
const maxInterimAnswers = 5

var (
	errHeadersTooLarge = errors.New("the model server's answer headers are over the limit")
	errTooManyInterim  = errors.New("the model server sent too many interim (1xx) answers")
	// errHeaderTimeout is a timeout (net.Error), so the client gets a 504.
	errHeaderTimeout = &timeoutError{"the model server did not send its answer's headers in time"}
	aLongTimeAgo     = time.Unix(1, 0)
)

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// RoundTrip implements http.RoundTripper.
func (t *UpstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.handles(req) {
		return t.Fallback.RoundTrip(req)
	}
	if err := validHeader(req.Header); err != nil {
		closeRequestBody(req)
		return nil, err
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	for retried := false; ; retried = true {
		pc, reused, err := t.conn(ctx, addr)
		if err != nil {
			closeRequestBody(req)
			return nil, err
		}
		resp, err, nothingCame := pc.roundTrip(t, req)
		if err == nil {
			return resp, nil
		}
		// As net/http's Transport: only a request that is safe to repeat, and only when
		// the connection may have been closed by the model server while idle.
		if !reused || retried || !nothingCame || !replayable(req) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// handles says whether the request is one this transport sends itself.
func (t *UpstreamTransport) handles(req *http.Request) bool {
	return peekSupported && req.URL != nil && req.URL.Scheme == "http" && req.URL.Host != "" &&
		req.Header["Upgrade"] == nil &&
		(req.Body == nil || req.Body == http.NoBody || req.ContentLength >= 0 && req.ContentLength <= t.MaxInMemoryBody)
}

func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return req.Body == nil || req.Body == http.NoBody
	}
	return false
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// validHeader refuses what net/http's Transport refuses: header names that are not
// tokens and values with control characters, which would let a value start a header
// of its own.
func validHeader(h http.Header) error {
	for k, vv := range h {
		if !validFieldName(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vv {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
					return fmt.Errorf("invalid header field value for %q", k)
				}
			}
		}
	}
	return nil
}

func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c < 0x80 && c > ' ' && c != 0x7f && !isSeparator(c):
		default:
			return false
		}
	}
	return true
}

func isSeparator(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
		return true
	}
	return false
}

// conn returns an idle connection to addr that is still open and has received
// nothing, or a new one.
func (t *UpstreamTransport) conn(ctx context.Context, addr string) (pc *upstreamConn, reused bool, err error) {
	now := time.Now()
	for {
		t.mu.Lock()
		stack := t.idle[addr]
		if len(stack) == 0 {
			t.mu.Unlock()
			break
		}
		pc = stack[len(stack)-1]
		stack[len(stack)-1] = nil
		t.idle[addr] = stack[:len(stack)-1]
		pc.idle = false
		t.mu.Unlock()
		pc.idleTimer.Stop()
		if now.Sub(pc.idleSince) < t.IdleConnTimeout && pc.quiet() {
			return pc, true, nil
		}
		pc.close()
	}
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	c, err := t.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	pc = &upstreamConn{conn: c, addr: addr, t: t, limit: math.MaxInt64}
	pc.br = bufio.NewReaderSize(pc, 4<<10)
	pc.bw = bufio.NewWriterSize(c, 4<<10)
	pc.peekFunc, pc.cancelFunc = pc.peek, pc.cancel
	if sc, ok := c.(syscall.Conn); ok {
		pc.raw, _ = sc.SyscallConn()
	}
	return pc, false, nil
}

// putIdle keeps pc for the next request to its model server, or closes it.
func (t *UpstreamTransport) putIdle(pc *upstreamConn) {
	pc.idleSince = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[string][]*upstreamConn{}
	}
	stack := t.idle[pc.addr]
	if len(stack) >= t.MaxIdleConnsPerHost {
		t.mu.Unlock()
		pc.close()
		return
	}
	t.idle[pc.addr] = append(stack, pc)
	pc.idle = true
	if pc.idleTimer == nil {
		pc.idleTimer = time.AfterFunc(t.IdleConnTimeout, pc.idleExpired)
	} else {
		pc.idleTimer.Reset(t.IdleConnTimeout)
	}
	t.mu.Unlock()
}

// CloseIdleConnections closes the connections no request is using.
func (t *UpstreamTransport) CloseIdleConnections() {
	t.mu.Lock()
	var all []*upstreamConn
	for addr, stack := range t.idle {
		for _, pc := range stack {
			pc.idle = false
			all = append(all, pc)
		}
		delete(t.idle, addr)
	}
	t.mu.Unlock()
	for _, pc := range all {
		pc.idleTimer.Stop()
		pc.close()
	}
	t.Fallback.CloseIdleConnections()
}

// upstreamConn is one HTTP/1.1 connection to a model server, used by one request at
// a time.
type upstreamConn struct {
	conn net.Conn
	raw  syscall.RawConn
	addr string
	t    *UpstreamTransport
	br   *bufio.Reader // reads through the connection's Read, which applies limit
	bw   *bufio.Writer
	// limit is what may still be read before the answer's headers are complete.
	limit int64

	// Guarded by t.mu.
	idle      bool
	idleSince time.Time
	idleTimer *time.Timer

	// pc.peek and pc.cancel, bound once rather than per request.
	peekFunc   func(fd uintptr) bool
	cancelFunc func()
	peekBuf    [1]byte
	peekN      int
	peekErr    syscall.Errno
	closeOnce  sync.Once
}

// Read reads from the connection within the header limit.
func (pc *upstreamConn) Read(p []byte) (int, error) {
	if pc.limit <= 0 {
		return 0, errHeadersTooLarge
	}
	if int64(len(p)) > pc.limit {
		p = p[:pc.limit]
	}
	n, err := pc.conn.Read(p)
	pc.limit -= int64(n)
	return n, err
}

// cancel wakes a blocked read or write, which then fails.
func (pc *upstreamConn) cancel() { _ = pc.conn.SetDeadline(aLongTimeAgo) }

func (pc *upstreamConn) close() { pc.closeOnce.Do(func() { pc.conn.Close() }) }

func (pc *upstreamConn) idleExpired() {
	t := pc.t
	t.mu.Lock()
	if !pc.idle {
		t.mu.Unlock()
		return // taken meanwhile
	}
	pc.idle = false
	stack := t.idle[pc.addr]
	for i, x := range stack {
		if x == pc {
			copy(stack[i:], stack[i+1:])
			stack[len(stack)-1] = nil
			t.idle[pc.addr] = stack[:len(stack)-1]
			break
		}
	}
	t.mu.Unlock()
	pc.close()
}

// quiet says whether the idle connection is still open and has received nothing: a
// byte that came while no request was waiting (beyond an answer's end, or a model
// server's unsolicited answer) or its close would otherwise be read as the next
// request's answer, or fail a request that cannot be sent again.
func (pc *upstreamConn) quiet() bool {
	if pc.raw == nil {
		return false
	}
	if err := pc.raw.Read(pc.peekFunc); err != nil {
		return false
	}
	return pc.peekN < 0 && (pc.peekErr == syscall.EAGAIN || pc.peekErr == syscall.EWOULDBLOCK)
}

// roundTrip sends req on pc and reads its answer's headers. nothingCame says whether
// a failure happened before any byte of an answer arrived.
func (pc *upstreamConn) roundTrip(t *UpstreamTransport, req *http.Request) (resp *http.Response, err error, nothingCame bool) {
	ctx := req.Context()
	// Cancelling the request wakes a blocked read or write, which then fails.
	stop := context.AfterFunc(ctx, pc.cancelFunc)
	fail := func(err error) (*http.Response, error, bool) {
		stop()
		pc.close()
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return nil, err, nothingCame
	}
	nothingCame = true
	// Request.Write closes the body, whatever happens.
	if err := req.Write(pc.bw); err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	if t.ResponseHeaderTimeout > 0 {
		_ = pc.conn.SetReadDeadline(time.Now().Add(t.ResponseHeaderTimeout))
	}
	pc.limit = t.MaxResponseHeaderBytes
	var trace *httptrace.ClientTrace
	for interim := 0; ; interim++ {
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			nothingCame = nothingCame && err == io.EOF
			var ne net.Error
			if ctx.Err() == nil && t.ResponseHeaderTimeout > 0 && errors.As(err, &ne) && ne.Timeout() {
				err = errHeaderTimeout
			}
			return fail(err)
		}
		nothingCame = false
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if interim == maxInterimAnswers {
			return fail(errTooManyInterim)
		}
		if trace == nil {
			trace = httptrace.ContextClientTrace(ctx)
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	pc.limit = math.MaxInt64
	if t.ResponseHeaderTimeout > 0 {
		_ = pc.conn.SetReadDeadline(time.Time{})
		// A cancellation that came before the deadline was cleared is undone by
		// clearing it: look again. One that comes after sets it again.
		if ctx.Err() != nil {
			return fail(nil)
		}
	}
	resp.Body = &upstreamBody{rc: resp.Body, pc: pc, ctx: ctx, stop: stop,
		// A 101 here was not asked for (upgrades go to Fallback): the connection speaks
		// something else now.
		reusable: !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols}
	return resp, nil, false
}

// upstreamBody is an answer's body; its end decides the connection's fate.
type upstreamBody struct {
	rc       io.ReadCloser
	pc       *upstreamConn
	ctx      context.Context
	stop     func() bool
	reusable bool

	mu   sync.Mutex
	done bool
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		b.finish(false)
		if cerr := b.ctx.Err(); cerr != nil {
			err = cerr
		}
	}
	return n, err
}

// Close before the end closes the connection: what is left of the answer is not
// read, so the connection cannot carry another one.
func (b *upstreamBody) Close() error {
	b.finish(b.rc == http.NoBody)
	return nil
}

// finish returns the connection to the pool when its answer ended cleanly, as its
// framing said, with nothing read beyond it; otherwise it closes it.
func (b *upstreamBody) finish(clean bool) {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return
	}
	b.done = true
	b.mu.Unlock()
	stopped := b.stop() // false: the request was cancelled, and the deadline is set
	pc := b.pc
	if clean && stopped && b.reusable && pc.br.Buffered() == 0 {
		pc.t.putIdle(pc)
		return
	}
	pc.close()
	// Only now: net/http's body drains what is left on Close, which on a closed
	// connection ends at once.
	b.rc.Close()
}
