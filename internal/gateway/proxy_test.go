package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

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

// A model server that breaks off its answer aborts the client's response, and the cut
// answer is not scored.
func TestForwardBrokenAnswer(t *testing.T) {
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if req, _ := readReq(br); req != nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"predictions\":")
		}
	})
	g2, srv := newTestGateway(t, Options{})
	_, err := g2.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: up}})
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

// A request that asks for a protocol upgrade gets it: after the model server's 101 the
// gateway carries bytes both ways.
func TestUpgradeIsSpliced(t *testing.T) {
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, _ := readReq(br)
		if req == nil || req.Header.Get("Upgrade") != "echo" {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_, _ = io.Copy(c, br)
	})
	g, srv := newTestGateway(t, Options{})
	routeTo(t, g, up, "", 0)
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /models/m/stream HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(got))
}

// A pooled request body stays the request's own while any call still holds it: a
// shadow copy waiting on a stuck candidate is sent with its own bytes, however many
// requests of the same size went through meanwhile.
func TestPooledBodiesAreNotReusedWhileHeld(t *testing.T) {
	release := make(chan struct{})
	champion, _ := upstream(t, "champion", nil)
	candidate, seen := upstream(t, "candidate", release)
	g, srv := newTestGateway(t, Options{Shadow: ShadowOptions{Workers: 1}})
	routeTo(t, g, champion.URL, candidate.URL, 100)
	const size = 8000
	for i := range 30 {
		letter := string(rune('a' + i%26))
		code, body := send(t, http.MethodPost, srv.URL+"/models/m/invocations", "r"+letter, strings.NewReader(strings.Repeat(letter, size)), 0)
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "champion answers "+strings.Repeat(letter, size), body)
	}
	close(release)
	for i := range 30 {
		select {
		case r := <-seen:
			letter := r.header.Get(RequestIDHeader)[1:]
			assert.Equal(t, strings.Repeat(letter, size), r.body, "shadow copy %d", i)
		case <-time.After(10 * time.Second):
			t.Fatalf("shadow copy %d never came", i)
		}
	}
}

// A client's Expect: 100-continue is answered by the gateway's server; the model
// server is not asked again, so it cannot hold the body back.
func TestExpectContinueStaysWithTheGateway(t *testing.T) {
	champion, seen := upstream(t, "champion", nil)
	candidate, seenShadow := upstream(t, "candidate", nil)
	g, srv := newTestGateway(t, Options{})
	routeTo(t, g, champion.URL, candidate.URL, 100)
	for _, body := range []io.Reader{strings.NewReader("{}"), io.MultiReader(strings.NewReader("{}"))} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/models/m/invocations", body)
		require.NoError(t, err)
		req.Header.Set("Expect", "100-continue")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "champion answers {}", string(got))
		r := <-seen
		assert.Empty(t, r.header.Get("Expect"))
		select {
		case r := <-seenShadow:
			assert.Empty(t, r.header.Get("Expect"))
			assert.Equal(t, "{}", r.body)
		case <-time.After(5 * time.Second):
			t.Fatal("no shadow copy")
		}
	}
}
