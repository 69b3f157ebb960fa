package gateway

// The conformance suite: model servers and clients that misbehave on purpose, over raw
// TCP, each test one way a proxy can go wrong (issue 9's items, and the request
// smuggling probes). What a test asserts is what a client or model server could see.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// rawUpstream is a model server written on a raw listener: serve gets each accepted
// connection (i counts them from 0) and may say anything on it.
func rawUpstream(t *testing.T, serve func(i int, c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(i, c, bufio.NewReader(c))
			})
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// readReq reads one request and its whole body; nil when the connection ended.
func readReq(br *bufio.Reader) (*http.Request, string) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, ""
	}
	body, _ := io.ReadAll(req.Body)
	return req, string(body)
}

// answer writes a well-formed answer whose body names the request's ID.
func answer(c net.Conn, req *http.Request) {
	body := "fresh:" + req.Header.Get(RequestIDHeader)
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// routeTo publishes model m with champion (and candidate, when not empty).
func routeTo(t *testing.T, g *Gateway, champion, candidate string, shadow int) {
	t.Helper()
	tr := deploy.Traffic{Model: "m", Champion: deploy.Backend{Version: "1", URL: champion}}
	if candidate != "" {
		tr.Candidate = &deploy.Backend{Version: "2", URL: candidate}
		tr.ShadowShare = shadow
	}
	_, err := g.apply(tr)
	require.NoError(t, err)
}

// send makes one request through the gateway with a 5 s bound.
func send(t *testing.T, method, url, id string, body io.Reader, length int64) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	require.NoError(t, err)
	if length != 0 {
		req.ContentLength = length
	}
	req.Header.Set(RequestIDHeader, id)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, "no answer in 5 s")
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// rawClient sends raw bytes to addr and returns what the gateway says back: its first
// answer, and any more that follow at once.
func rawClient(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = io.WriteString(c, raw)
	require.NoError(t, err)
	// The client does not half-close: the server would take that for a client gone.
	var out strings.Builder
	br := bufio.NewReader(io.TeeReader(c, &out))
	for n := 0; ; n++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.Close {
			break
		}
		// Another answer would come straight after the first.
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	}
	return out.String()
}

// Item 1: bytes an upstream sends beyond its answer (past Content-Length, or a body on
// HEAD, 204 or 304), arriving a moment later, must never become another client's answer.
func TestConformanceLeftoverBytesNeverBecomeAnotherAnswer(t *testing.T) {
	cases := []struct{ name, method, first string }{
		{"more than Content-Length", http.MethodPost, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{"body on HEAD", http.MethodHead, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"},
		{"body on 204", http.MethodPost, "HTTP/1.1 204 No Content\r\n\r\n"},
		{"body on 304", http.MethodGet, "HTTP/1.1 304 Not Modified\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			firstSeen, extraSent, closed := make(chan struct{}), make(chan struct{}), make(chan struct{}, 8)
			up := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				for n := 0; ; n++ {
					req, _ := readReq(br)
					if req == nil {
						closed <- struct{}{}
						return
					}
					if i == 0 && n == 0 {
						io.WriteString(c, tc.first)
						<-firstSeen
						// A whole answer naming alice, as if it belonged to the next request.
						io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Request-Id: alice\r\nContent-Length: 5\r\n\r\nEVIL!")
						close(extraSent)
						continue
					}
					answer(c, req)
				}
			})
			g, srv := newTestGateway(t, Options{})
			routeTo(t, g, up, "", 0)

			code, _ := send(t, tc.method, srv.URL+"/models/m/invocations", "alice", nil, 0)
			assert.Less(t, code, 500)
			close(firstSeen)
			<-extraSent
			// A correct client closes the connection on the unsolicited answer; give a
			// wrong one a while before the next request shows what it kept.
			select {
			case <-closed:
			case <-time.After(2 * time.Second):
			}
			code, body := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "bob", strings.NewReader("{}"), 0)
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, "fresh:bob", body, "bob got an answer that was not his")
		})
	}
}

// Item 2: a streamed request body (chunked, or over 1 MiB) sent after the model server
// closed an idle keep-alive connection (uvicorn does after 5 s) is answered, not 502:
// the gateway lets its idle connections go first.
func TestConformanceStreamedBodyAfterIdleClose(t *testing.T) {
	uvicornIdle := UpstreamIdleTimeout + time.Second
	for _, tc := range []struct {
		name   string
		body   func() io.Reader
		length int64
	}{
		{"chunked", func() io.Reader { return io.MultiReader(strings.NewReader("{}")) }, -1},
		{"over 1 MiB", func() io.Reader { return strings.NewReader(strings.Repeat("x", 2<<20)) }, 2 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			closeIdle, closed := make(chan struct{}), make(chan struct{})
			up := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				req, _ := readReq(br)
				if req == nil {
					return
				}
				answer(c, req)
				if i == 0 {
					<-closeIdle // the idle timeout passes
					c.Close()
					close(closed)
					return
				}
				for req, _ = readReq(br); req != nil; req, _ = readReq(br) {
					answer(c, req)
				}
			})
			g, srv := newTestGateway(t, Options{})
			routeTo(t, g, up, "", 0)
			code, _ := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "first", strings.NewReader("{}"), 0)
			require.Equal(t, http.StatusOK, code)
			time.AfterFunc(uvicornIdle, func() { close(closeIdle) })
			<-closed
			code, body := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "second", tc.body(), tc.length)
			assert.Equal(t, http.StatusOK, code, body)
			assert.Equal(t, "fresh:second", body)
		})
	}
}

// Item 3: a POST whose reused connection closes after the model server read it, before
// any answer, is not sent again: the server may have acted on it.
func TestConformancePostNeverSentTwice(t *testing.T) {
	var posts atomic.Int32
	up := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			req, _ := readReq(br)
			if req == nil {
				return
			}
			if req.Header.Get(RequestIDHeader) == "once" {
				posts.Add(1)
				if i == 0 && n == 1 {
					return // read it, then the connection closes without an answer
				}
			}
			answer(c, req)
		}
	})
	g, srv := newTestGateway(t, Options{})
	routeTo(t, g, up, "", 0)
	code, _ := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "warm", strings.NewReader("{}"), 0)
	require.Equal(t, http.StatusOK, code)
	code, _ = send(t, http.MethodPost, srv.URL+"/models/m/invocations", "once", strings.NewReader("{}"), 0)
	assert.Equal(t, http.StatusBadGateway, code)
	assert.EqualValues(t, 1, posts.Load(), "the model server got the POST this many times")
}

// hugeHeaders is a model server whose answer's headers go on for 16 MiB; it reports how
// many bytes it got to write before the gateway hung up.
func hugeHeaders(t *testing.T) (string, *atomic.Int64) {
	var wrote atomic.Int64
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if req, _ := readReq(br); req == nil {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		n, err := io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Junk: " + strings.Repeat("j", 1014) + "\r\n"
		for ; err == nil && wrote.Load() < 16<<20; wrote.Add(int64(n)) {
			n, err = io.WriteString(c, line)
		}
		if err == nil {
			io.WriteString(c, "Content-Length: 2\r\n\r\nok")
		}
	})
	return up, &wrote
}

// Item 4: an answer's headers are bounded, on the primary path and the shadow's.
func TestConformanceUpstreamHeadersBounded(t *testing.T) {
	t.Run("primary", func(t *testing.T) {
		up, wrote := hugeHeaders(t)
		g, srv := newTestGateway(t, Options{})
		routeTo(t, g, up, "", 0)
		code, _ := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "h", strings.NewReader("{}"), 0)
		assert.Equal(t, http.StatusBadGateway, code)
		assert.Less(t, wrote.Load(), int64(16<<20), "the gateway read every header")
	})
	t.Run("shadow", func(t *testing.T) {
		champion := answering(t, `{"predictions":[1]}`)
		up, wrote := hugeHeaders(t)
		g, srv := newTestGateway(t, Options{})
		routeTo(t, g, champion.URL, up, 100)
		code, _ := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "h", strings.NewReader("{}"), 0)
		assert.Equal(t, http.StatusOK, code)
		require.Eventually(t, func() bool { return g.requestsCounted("m", "candidate", "2", "shadow", "502") == 1 },
			10*time.Second, 10*time.Millisecond, "the shadow copy was not counted as 502")
		assert.Less(t, wrote.Load(), int64(16<<20), "the shadow read every header")
	})
}

// Item 6: a 101 to a request that asked for no upgrade is a 502, not a hung client; a
// 103 Early Hints reaches the client before the answer.
func TestConformanceInterimAnswers(t *testing.T) {
	t.Run("101 to a plain request", func(t *testing.T) {
		up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
			if req, _ := readReq(br); req == nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			_, _ = io.Copy(io.Discard, br) // and holds the connection open
		})
		g, srv := newTestGateway(t, Options{})
		routeTo(t, g, up, "", 0)
		code, _ := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "u", strings.NewReader("{}"), 0)
		assert.Equal(t, http.StatusBadGateway, code)
	})
	t.Run("103 Early Hints", func(t *testing.T) {
		up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
			for req, _ := readReq(br); req != nil; req, _ = readReq(br) {
				io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </w.css>; rel=preload\r\n\r\n")
				answer(c, req)
			}
		})
		g, srv := newTestGateway(t, Options{})
		routeTo(t, g, up, "", 0)
		var hints []string
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
				return nil
			},
		})
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/models/m/invocations", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, []string{"103 </w.css>; rel=preload"}, hints)
	})
}

// Item 7: a path whose segments decode to "." or ".." (or hide a "/") is refused with 400
// before routing, and never reaches a model server.
func TestConformanceDotSegmentsRefused(t *testing.T) {
	var reached atomic.Int32
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for req, _ := readReq(br); req != nil; req, _ = readReq(br) {
			reached.Add(1)
			answer(c, req)
		}
	})
	g, srv := newTestGateway(t, Options{})
	routeTo(t, g, up, "", 0)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, path := range []string{
		"/models/m/%2e%2e/%2e%2e/repository/models/other/unload",
		"/models/m/%2E%2e/x",
		"/models/m/.%2e/x",
		"/models/m/%2e/x",
		"/models/m/../x",
		"/models/%2e%2e/x",
		"/models/m/a/..",
		"/models/m/..%2f..%2frepository",
		"/models/m/..%5c..%5crepository",
	} {
		out := rawClient(t, addr, "POST "+path+" HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
		assert.True(t, strings.HasPrefix(out, "HTTP/1.1 400 "), "%s: %.60q", path, out)
	}
	assert.Zero(t, reached.Load(), "a dot-segment path reached the model server")
}

// Item 8: the client cannot mark a live request as shadow, cannot choose the
// X-Forwarded-For a model server sees, and the headers it lists in Connection stay
// behind, on the primary and on the shadow copy.
func TestConformanceClientHeadersStripped(t *testing.T) {
	champion, seenChampion := upstream(t, "champion", nil)
	candidate, seenCandidate := upstream(t, "candidate", nil)
	g, srv := newTestGateway(t, Options{})
	routeTo(t, g, champion.URL, candidate.URL, 100)
	out := rawClient(t, strings.TrimPrefix(srv.URL, "http://"), "POST /models/m/invocations HTTP/1.1\r\nHost: g\r\n"+
		"X-Mlrelease-Shadow: true\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n"+
		"Content-Length: 2\r\n\r\n{}")
	require.True(t, strings.HasPrefix(out, "HTTP/1.1 200 "), "%.80q", out)
	for name, seen := range map[string]<-chan received{"champion": seenChampion, "candidate": seenCandidate} {
		select {
		case r := <-seen:
			assert.Equal(t, []string{"127.0.0.1"}, r.header["X-Forwarded-For"], name)
			assert.Empty(t, r.header.Get("Forwarded"), name)
			assert.Empty(t, r.header.Get("X-Secret"), name)
			if name == "champion" {
				assert.Empty(t, r.header.Get(ShadowHeader), "the live request arrived marked as shadow")
			} else {
				assert.Equal(t, "true", r.header.Get(ShadowHeader))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s got no request", name)
		}
	}
}

// Item 9: the admin API reads JSON strictly, checks model names, refuses a route back to
// the gateway itself, deletes routes, and clears a killed save's temporary files.
func TestConformanceAdmin(t *testing.T) {
	up := answering(t, `{"predictions":[1]}`)
	dir := t.TempDir()
	state := filepath.Join(dir, "routes.json")
	stale := filepath.Join(dir, ".routes.json.123456.tmp")
	require.NoError(t, os.WriteFile(stale, []byte("{"), 0o600))
	_, srv := newTestGateway(t, Options{StateFile: state})
	_, err := os.Stat(stale)
	assert.ErrorIs(t, err, os.ErrNotExist, "a killed save's temporary file is still there")

	base := srv.URL + "/admin/v1/models/"
	champion := `"champion":{"version":"1","url":"` + up.URL + `"}`
	for _, tc := range []struct{ name, model, body, want string }{
		{"key in another case", "m", `{` + champion + `,"candidate":{"version":"2","url":"` + up.URL + `"},"CANDIDATEWEIGHT":100}`, "CANDIDATEWEIGHT"},
		{"nested key in another case", "m", `{"champion":{"VERSION":"1","url":"` + up.URL + `"}}`, "VERSION"},
		{"duplicate key", "m", `{` + champion + `,"candidate":{"version":"2","url":"` + up.URL + `"},"candidateWeight":0,"candidateWeight":100}`, "candidateWeight"},
		{"newline in name", "a%0Ab", `{` + champion + `}`, "model"},
		{"long name", strings.Repeat("a", 3000), `{` + champion + `}`, "model"},
		{"route to the gateway itself", "m", `{"champion":{"version":"1","url":"` + srv.URL + `"}}`, srv.URL},
	} {
		code, body := admin(t, http.MethodPut, base+tc.model, "", tc.body)
		assert.Equal(t, http.StatusBadRequest, code, "%s: %s", tc.name, body)
		assert.Contains(t, body, tc.want, tc.name)
	}
	code, _ := admin(t, http.MethodGet, base+"m", "", "")
	assert.Equal(t, http.StatusNotFound, code, "a refused route was applied")

	code, body := admin(t, http.MethodPut, base+"m", "", `{`+champion+`}`)
	require.Equal(t, http.StatusOK, code, body)
	code, body = admin(t, http.MethodDelete, base+"m", "", "")
	assert.Equal(t, http.StatusOK, code, body)
	code, _ = admin(t, http.MethodGet, base+"m", "", "")
	assert.Equal(t, http.StatusNotFound, code, "the deleted route is still served")
	raw, err := os.ReadFile(state)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), `"model": "m"`, "the deleted route is still in the state file")
}

// The request smuggling probes: however a client frames its body, the model server
// gets one request with one unambiguous framing, and nothing the client hid in a
// body arrives as a request of its own.
func TestConformanceRequestSmuggling(t *testing.T) {
	var mu sync.Mutex
	var got []string
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, body := readReq(br)
			if req == nil {
				return
			}
			mu.Lock()
			got = append(got, fmt.Sprintf("%s %s cl=%q te=%q body=%q", req.Method, req.URL.Path,
				req.Header.Get("Content-Length"), req.TransferEncoding, body))
			mu.Unlock()
			answer(c, req)
		}
	})
	g, srv := newTestGateway(t, Options{})
	routeTo(t, g, up, "", 0)
	addr := strings.TrimPrefix(srv.URL, "http://")
	smuggled := "GET /models/m/smuggled HTTP/1.1\r\nHost: g\r\n\r\n"
	for _, tc := range []struct{ name, head, body string }{
		{"CL and TE", "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + smuggled},
		{"TE and CL", "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n", "0\r\n\r\n" + smuggled},
		{"two Content-Lengths", "Content-Length: 2\r\nContent-Length: 60\r\n", "{}" + smuggled},
		{"a listed Content-Length", "Content-Length: 2, 60\r\n", "{}" + smuggled},
		{"obs-fold in Transfer-Encoding", "Transfer-Encoding: identity\r\n chunked\r\nContent-Length: 2\r\n", "{}" + smuggled},
		{"obs-fold in Content-Length", "Content-Length: 2\r\n 0\r\n", "{}" + smuggled},
		{"TE not chunked last", "Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n" + smuggled},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		out := rawClient(t, addr, "POST /models/m/invocations HTTP/1.1\r\nHost: g\r\n"+tc.head+"\r\n"+tc.body)
		mu.Lock()
		seen := got
		mu.Unlock()
		// Whatever the gateway answered, a request that reached the model server had one
		// framing and no other request hidden in its body. (When Transfer-Encoding wins,
		// as RFC 9112 lets it, the GET after the chunked body is the client's next
		// request on its connection, and arrives as a request of its own.)
		for _, s := range seen {
			_, body, _ := strings.Cut(s, " body=")
			assert.NotContains(t, body, "GET /", "%s: %s", tc.name, s)
			assert.False(t, strings.Contains(s, `cl="`) && !strings.Contains(s, `cl=""`) && strings.Contains(s, `te=["chunked"]`),
				"%s: both framings reached the model server: %s", tc.name, s)
		}
		assert.NotContains(t, out, "fresh:\r", tc.name)
		if len(seen) == 0 {
			assert.True(t, strings.HasPrefix(out, "HTTP/1.1 400 ") || strings.HasPrefix(out, "HTTP/1.1 501 "), "%s: %.80q", tc.name, out)
		}
	}

	// And the answer side: an answer with both framings, or two lengths, is a 502 and
	// does not shift the next answer.
	for _, first := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",
	} {
		bad := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
			for n := 0; ; n++ {
				req, _ := readReq(br)
				if req == nil {
					return
				}
				if i == 0 && n == 0 {
					io.WriteString(c, first)
					continue
				}
				answer(c, req)
			}
		})
		routeTo(t, g, bad, "", 0)
		code, body := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "alice", strings.NewReader("{}"), 0)
		if code == http.StatusOK {
			assert.Equal(t, "hello", body)
		}
		code, body = send(t, http.MethodPost, srv.URL+"/models/m/invocations", "bob", strings.NewReader("{}"), 0)
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "fresh:bob", body)
	}
}

// Item 5: shadow copies waiting for (or at) a stuck candidate hold at most
// MaxQueuedBytes; the rest are dropped and counted, and the budget comes back once the
// candidate answers.
func TestConformanceShadowMemoryBoundedInBytes(t *testing.T) {
	release := make(chan struct{})
	champion := answering(t, `{"predictions":[1]}`)
	candidate, seen := upstream(t, "candidate", release)
	const budget = 4 << 20
	g, srv := newTestGateway(t, Options{Shadow: ShadowOptions{MaxQueuedBytes: budget, Workers: 2, QueueSize: 256, Timeout: 10 * time.Second}})
	routeTo(t, g, champion.URL, candidate.URL, 100)

	const n, size = 20, 512 << 10
	body := strings.Repeat("b", size)
	peak := int64(0)
	for i := range n {
		code, _ := send(t, http.MethodPost, srv.URL+"/models/m/invocations", fmt.Sprint("r", i), strings.NewReader(body), 0)
		require.Equal(t, http.StatusOK, code)
		peak = max(peak, g.shadow.held.Load())
	}
	dropped := testutil.ToFloat64(g.metrics.shadowDropped.WithLabelValues("m"))
	accepted := n - int(dropped)
	assert.LessOrEqual(t, peak, int64(budget), "shadow copies held more bytes than the budget")
	assert.LessOrEqual(t, accepted*size, budget)
	assert.GreaterOrEqual(t, accepted, budget/(size+shadowOverhead+4<<10)-1, "the budget was not used")

	close(release)
	for range accepted {
		select {
		case <-seen:
		case <-time.After(10 * time.Second):
			t.Fatal("a queued shadow copy was never sent")
		}
	}
	require.Eventually(t, func() bool { return g.shadow.held.Load() == 0 }, 10*time.Second, 5*time.Millisecond,
		"the budget did not come back")
}
