package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// countingServer is an httptest server that counts the connections it accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// rawServer hands each accepted connection, numbered from 0, to serve.
func rawServer(t *testing.T, serve func(i int, c net.Conn)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	done := false
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		done = true
		for _, c := range open {
			c.Close() // ends serve's reads
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			if done {
				c.Close()
			}
			mu.Unlock()
			i := int(conns.Add(1)) - 1
			wg.Go(func() {
				defer c.Close()
				serve(i, c)
			})
		}
	})
	return ln.Addr().String(), &conns
}

// readRequest reads one request and its body from a raw connection.
func readRequest(t *testing.T, br *bufio.Reader) (*http.Request, string) {
	t.Helper()
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, ""
	}
	b, err := io.ReadAll(req.Body)
	assert.NoError(t, err)
	return req, string(b)
}

func testClient() *upstreamClient {
	c := newUpstreamClient()
	c.dialer.Timeout = 5 * time.Second
	return c
}

func addrOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// doCall sends one request and reads the whole answer.
func doCall(t *testing.T, c *upstreamClient, addr, method, body string) (*http.Response, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := &upstreamRequest{method: method, uri: "/invocations", host: addr, addr: addr,
		header: http.Header{"Content-Type": {"application/json"}}, body: []byte(body)}
	resp, err := c.roundTrip(ctx, q)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func idleConns(c *upstreamClient, addr string) int {
	p := c.pool(addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Answers with Content-Length, chunked and empty (HEAD, 204) all leave the connection
// for the next request: ten calls, one connection.
func TestUpstreamClientReusesConnections(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Query().Get("kind") {
		case "chunked":
			io.WriteString(w, "part1,")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part2:"+string(body))
		case "empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)+5))
			io.WriteString(w, "echo:"+string(body))
		}
	})
	c := testClient()
	addr := addrOf(srv)
	for i := range 10 {
		kind := []string{"length", "chunked", "empty"}[i%3]
		ctx := context.Background()
		q := &upstreamRequest{method: "POST", uri: "/x?kind=" + kind, host: addr, addr: addr, body: []byte(fmt.Sprint(i))}
		resp, err := c.roundTrip(ctx, q)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		switch kind {
		case "chunked":
			assert.Equal(t, []string{"chunked"}, resp.TransferEncoding)
			assert.Equal(t, fmt.Sprintf("part1,part2:%d", i), string(b))
		case "empty":
			assert.Equal(t, http.StatusNoContent, resp.StatusCode)
			assert.Empty(t, b)
		default:
			assert.Equal(t, int64(len(b)), resp.ContentLength)
			assert.Equal(t, fmt.Sprintf("echo:%d", i), string(b))
		}
		require.NoError(t, resp.Body.Close())
		assert.Equal(t, 1, idleConns(c, addr), "back in the pool after request %d", i)
	}
	resp, body, err := doCall(t, c, addr, http.MethodHead, "")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, body)
	assert.Equal(t, int32(1), conns.Load())
	c.closeIdle()
	assert.Equal(t, 0, idleConns(c, addr))
}

// The model server closed the idle connection; the request fails on it before any
// answer and goes once more on a new connection, body and all.
func TestUpstreamClientRetriesOnStaleConnection(t *testing.T) {
	closed := make(chan struct{})
	bodies := make(chan string, 4)
	addr, conns := rawServer(t, func(i int, c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, body := readRequest(t, br)
			if req == nil {
				return
			}
			bodies <- body
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			if i == 0 {
				c.Close()
				close(closed)
				return
			}
		}
	})
	c := testClient()
	_, body, err := doCall(t, c, addr, "POST", "one")
	require.NoError(t, err)
	assert.Equal(t, "one", body)
	<-closed
	require.Equal(t, 1, idleConns(c, addr), "the stale connection is in the pool")

	_, body, err = doCall(t, c, addr, "POST", "two")
	require.NoError(t, err)
	assert.Equal(t, "two", body)
	assert.Equal(t, int32(2), conns.Load())
	assert.Equal(t, "one", <-bodies)
	assert.Equal(t, "two", <-bodies, "the retry carries the body")
	assert.Empty(t, bodies)
}

// Once a byte of the answer arrived, a failure is the caller's: no second request.
func TestUpstreamClientNeverRetriesAfterPartialAnswer(t *testing.T) {
	for _, tc := range []struct{ name, cut string }{
		{"in the headers", "HTTP/1.1 200 OK\r\nContent-Le"},
		{"in the status line", "HTT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			addr, conns := rawServer(t, func(i int, c net.Conn) {
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					if req, _ := readRequest(t, br); req == nil {
						return
					}
					requests.Add(1)
					if n == 0 {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						continue
					}
					io.WriteString(c, tc.cut)
					return
				}
			})
			c := testClient()
			_, body, err := doCall(t, c, addr, "POST", "{}")
			require.NoError(t, err)
			require.Equal(t, "ok", body)
			_, _, err = doCall(t, c, addr, "POST", "{}")
			require.Error(t, err)
			assert.Equal(t, http.StatusBadGateway, upstreamErrorCode(err))
			assert.Equal(t, int32(2), requests.Load(), "sent once, not retried")
			assert.Equal(t, int32(1), conns.Load())
			assert.Equal(t, 0, idleConns(c, addr))
		})
	}
}

// A body cut off midway is an error to the reader, and its connection is not reused.
func TestUpstreamClientBodyCutOff(t *testing.T) {
	addr, conns := rawServer(t, func(i int, c net.Conn) {
		br := bufio.NewReader(c)
		if req, _ := readRequest(t, br); req == nil {
			return
		}
		if i == 0 {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	c := testClient()
	resp, body, err := doCall(t, c, addr, "POST", "{}")
	require.NotNil(t, resp)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, "abc", body)
	assert.Equal(t, 0, idleConns(c, addr))
	_, body, err = doCall(t, c, addr, "POST", "{}")
	require.NoError(t, err)
	assert.Equal(t, "ok", body)
	assert.Equal(t, int32(2), conns.Load())
}

// "Connection: close", an HTTP/1.0 answer and one that ends with the connection all
// leave it closed; a body closed before its end does too.
func TestUpstreamClientDoesNotReuseClosingConnections(t *testing.T) {
	answers := []string{
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\n\r\nok", // read to the end of the connection
	}
	for k, answer := range answers {
		t.Run(fmt.Sprint(k), func(t *testing.T) {
			addr, conns := rawServer(t, func(i int, c net.Conn) {
				br := bufio.NewReader(c)
				if req, _ := readRequest(t, br); req == nil {
					return
				}
				io.WriteString(c, answer)
				// Keep the connection open unless the answer ends with it: the client
				// must close it on its own.
				if k != 2 {
					br.ReadByte()
				}
			})
			c := testClient()
			for range 2 {
				_, body, err := doCall(t, c, addr, "POST", "{}")
				require.NoError(t, err)
				assert.Equal(t, "ok", body)
				assert.Equal(t, 0, idleConns(c, addr))
			}
			assert.Equal(t, int32(2), conns.Load())
		})
	}

	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100<<10))
	})
	c := testClient()
	addr := addrOf(srv)
	q := &upstreamRequest{method: "GET", uri: "/", host: addr, addr: addr}
	resp, err := c.roundTrip(context.Background(), q)
	require.NoError(t, err)
	_, err = resp.Body.Read(make([]byte, 10))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, 0, idleConns(c, addr))
	_, _, err = doCall(t, c, addr, "GET", "")
	require.NoError(t, err)
	assert.Equal(t, int32(2), conns.Load())
}

// A model server that takes the request and never answers is a timeout (504), and a
// caller whose context ends gets the context's error at once.
func TestUpstreamClientTimeoutsAndCancel(t *testing.T) {
	got := make(chan struct{}, 2)
	addr, _ := rawServer(t, func(i int, c net.Conn) {
		br := bufio.NewReader(c)
		if req, _ := readRequest(t, br); req == nil {
			return
		}
		got <- struct{}{}
		br.ReadByte() // until the client closes
	})
	c := testClient()
	c.headerTimeout = 20 * time.Millisecond
	_, _, err := doCall(t, c, addr, "POST", "{}")
	require.Error(t, err)
	assert.Equal(t, http.StatusGatewayTimeout, upstreamErrorCode(err))
	assert.Contains(t, err.Error(), "timeout awaiting response headers")
	<-got

	c.headerTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.roundTrip(ctx, &upstreamRequest{method: "POST", uri: "/", host: addr, addr: addr, body: []byte("{}")})
		errc <- err
	}()
	<-got
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)
	assert.Equal(t, 0, idleConns(c, addr))

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, _, err = doCall(t, c, addrOf(dead), "POST", "{}")
	require.Error(t, err)
	assert.Equal(t, http.StatusBadGateway, upstreamErrorCode(err))
}

// The pool keeps at most maxIdle connections per address.
func TestUpstreamClientCapsIdleConnections(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 3)
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	})
	c := testClient()
	c.maxIdle = 2
	addr := addrOf(srv)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			_, body, err := doCall(t, c, addr, "GET", "")
			assert.NoError(t, err)
			assert.Equal(t, "ok", body)
		})
	}
	for range 3 {
		<-arrived
	}
	close(release)
	wg.Wait()
	assert.Equal(t, int32(3), conns.Load())
	assert.Equal(t, 2, idleConns(c, addr))
}

// A streamed request body goes out chunked when its length is unknown, and with its
// length otherwise.
func TestUpstreamClientStreamsRequestBodies(t *testing.T) {
	type seen struct {
		te     []string
		length int64
		body   string
	}
	got := make(chan seen, 2)
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.TransferEncoding, r.ContentLength, string(b)}
	})
	c := testClient()
	addr := addrOf(srv)
	big := strings.Repeat("y", 200<<10)
	for _, length := range []int64{-1, int64(len(big))} {
		q := &upstreamRequest{method: "POST", uri: "/", host: addr, addr: addr, stream: strings.NewReader(big), length: length}
		resp, err := c.roundTrip(context.Background(), q)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		s := <-got
		assert.Equal(t, big, s.body)
		if length < 0 {
			assert.Equal(t, []string{"chunked"}, s.te)
		} else {
			assert.Equal(t, length, s.length)
		}
	}
}

// Through the gateway: hop-by-hop headers stay on their side in both directions, the
// client's X-Forwarded-* are replaced, and the gateway's headers win over the model
// server's.
func TestForwardHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		seen <- h
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "hop")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set(VariantHeader, "forged")
		w.Header().Set("X-Model", "kept")
		io.WriteString(w, `{"predictions":[1]}`)
	}))
	t.Cleanup(model.Close)
	g, srv := newTestGateway(t, Options{})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: model.URL}})
	require.NoError(t, err)

	req, err := http.NewRequest("POST", srv.URL+"/models/iris/invocations", strings.NewReader("{}"))
	require.NoError(t, err)
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop")
	req.Header.Set("Proxy-Authorization", "Basic x")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	req.Header.Set("X-Client", "kept")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, `{"predictions":[1]}`, string(body))

	up := <-seen
	assert.Equal(t, "kept", up.Get("X-Client"))
	assert.Empty(t, up.Get("X-Secret"))
	assert.Empty(t, up.Get("Proxy-Authorization"))
	assert.Empty(t, up.Get("Forwarded"))
	assert.Equal(t, "127.0.0.1", up.Get("X-Forwarded-For"))
	assert.Equal(t, strings.TrimPrefix(srv.URL, "http://"), up.Get("X-Forwarded-Host"))
	assert.Equal(t, "http", up.Get("X-Forwarded-Proto"))
	assert.Equal(t, strings.TrimPrefix(model.URL, "http://"), up.Get("Host"))
	assert.NotEmpty(t, up.Get(RequestIDHeader))
	assert.Equal(t, "2", up.Get("Content-Length"))

	assert.Equal(t, "kept", resp.Header.Get("X-Model"))
	assert.Empty(t, resp.Header.Get("X-Private"))
	assert.Empty(t, resp.Header.Get("Keep-Alive"))
	assert.Equal(t, []string{deploy.Champion}, resp.Header.Values(VariantHeader))
	assert.Equal(t, 1.0, g.requestsCounted("iris", "champion", "1", "primary", "200"))
}

// An answer of unknown length reaches the client piece by piece, and a request body of
// unknown length over the buffering cap reaches the model server whole.
func TestForwardStreams(t *testing.T) {
	next := make(chan struct{})
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d;", len(b))
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "done")
	}))
	t.Cleanup(model.Close)
	g, srv := newTestGateway(t, Options{Shadow: ShadowOptions{MaxBodyBytes: 16}})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: model.URL}})
	require.NoError(t, err)

	body := strings.Repeat("z", 1000)
	req, err := http.NewRequest("POST", srv.URL+"/models/iris/invocations", io.MultiReader(strings.NewReader(body)))
	require.NoError(t, err)
	req.ContentLength = -1 // unknown: sent chunked
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	first := make([]byte, len("got 1000;"))
	_, err = io.ReadFull(resp.Body, first)
	require.NoError(t, err)
	assert.Equal(t, "got 1000;", string(first), "the first piece arrives before the model server ends")
	close(next)
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "done", string(rest))
}

// Through the gateway's own client: a model server past the header timeout is a 504,
// and one that breaks off its answer aborts the client's response.
func TestForwardTimeoutAndBrokenAnswer(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); slow.Close() })
	g := newGateway(t, Options{})
	g.client.headerTimeout = 20 * time.Millisecond
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: slow.URL}})
	require.NoError(t, err)
	rec := serve(g, "POST", "/models/iris/invocations", "{}", nil)
	assert.Equal(t, http.StatusGatewayTimeout, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.Contains(t, rec.Body.String(), "did not answer in time")
	assert.Equal(t, 1.0, g.requestsCounted("iris", "champion", "1", "primary", "504"))

	addr, _ := rawServer(t, func(i int, c net.Conn) {
		if req, _ := readRequest(t, bufio.NewReader(c)); req != nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"predictions\":")
		}
	})
	g2, srv := newTestGateway(t, Options{})
	_, err = g2.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: "http://" + addr}})
	require.NoError(t, err)
	// The client sees the answer cut off, or none at all when the gateway had not yet
	// flushed the headers: never a complete one.
	resp, err := http.Post(srv.URL+"/models/iris/invocations", "application/json", strings.NewReader("{}"))
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	}
	assert.Error(t, err)
	srv.Close() // waits for the handler
	assert.Equal(t, 1.0, g2.requestsCounted("iris", "champion", "1", "primary", "200"))
	assert.Equal(t, uint64(0), scoreCount(t, g2, "champion", "1", "primary"))
}

// modelPath reads what the ServeMux's pattern would, and leaves to the mux every path
// it would clean, redirect or unescape.
func TestModelPathMatchesServeMux(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/models/{model}/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.PathValue("model")+"|"+r.PathValue("rest"))
	})
	for _, target := range []string{
		"/models/iris/invocations", "/models/iris/", "/models/iris/v2/models/x/infer?a=b", "/models/a.b-c_d/x/y/z",
		"/models/iris", "/models/", "/models//x", "/models/iris//x", "/models/./x", "/models/../x", "/models/iris/./x",
		"/models/iris/../x", "/models/iris/x/..", "/models/iris/x/.", "/models/ir%2Fis/x", "/models/ir%20is/x%3Fy",
		"/models/%2e%2e/x", "/modelsx/iris/x", "/models/iris/a%25b",
	} {
		req := httptest.NewRequest("POST", target, nil)
		model, rest, ok := modelPath(req)
		if !ok {
			continue
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code, target)
		assert.Equal(t, rec.Body.String(), model+"|"+rest, target)
	}
	for _, target := range []string{"/models/iris/invocations", "/models/iris/", "/models/a.b/c%20d"} {
		_, _, ok := modelPath(httptest.NewRequest("GET", target, nil))
		assert.True(t, ok, target)
	}
	for _, target := range []string{"/models/iris", "/models//x", "/models/iris/../x", "/models/ir%2Fis/x"} {
		_, _, ok := modelPath(httptest.NewRequest("GET", target, nil))
		assert.False(t, ok, target)
	}
}

// A model server's trailers reach the client after the answer.
func TestForwardTrailers(t *testing.T) {
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, `{"predictions":[1]}`)
		w.Header().Set("X-Checksum", "abc")
	}))
	t.Cleanup(model.Close)
	g, srv := newTestGateway(t, Options{})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: model.URL}})
	require.NoError(t, err)
	resp, err := http.Post(srv.URL+"/models/iris/invocations", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, `{"predictions":[1]}`, string(body))
	assert.Equal(t, "abc", resp.Trailer.Get("X-Checksum"))
	assert.Equal(t, uint64(1), scoreCount(t, g, "champion", "1", "primary"))
}
