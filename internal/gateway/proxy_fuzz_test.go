package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// FuzzProxyRequest sends arbitrary raw requests through the whole handler, to a
// champion and a 100% shadow candidate under a base path. Whatever the request, the
// gateway does not panic, no request reaches a model server outside its base path or
// with a dot segment, a live request never arrives marked as shadow, the client's
// X-Forwarded-For never does, and every model answer or failure names a request ID.
func FuzzProxyRequest(f *testing.F) {
	for _, seed := range []string{
		"POST /models/m/invocations HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\n\r\n{}",
		"POST /models/m/%2e%2e/%2e%2e/repository/models/other/unload HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n",
		"GET /models/m/v2/models/x/ready?q=%2e%2e HTTP/1.1\r\nHost: g\r\n\r\n",
		"POST /models/m/x HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"POST /models/m/x HTTP/1.1\r\nHost: g\r\nX-Mlrelease-Shadow: true\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: X-A\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}",
		"POST /models/m/a%2fb/..%5c HTTP/1.1\r\nHost: g\r\n\r\n",
		"PUT /models/m/./x HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: g\r\n\r\n",
		"POST /models//x HTTP/1.1\r\nHost: g\r\nVia: 1.1 other\r\nContent-Length: 1\r\n\r\nx",
	} {
		f.Add([]byte(seed))
	}
	var mu sync.Mutex
	var bad []string
	check := func(variant string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			var problem string
			switch {
			case !strings.HasPrefix(r.URL.Path, "/base/"):
				problem = "outside the base path"
			case hasDotSegment(r.URL.EscapedPath()):
				problem = "dot segment"
			case variant == "champion" && r.Header.Get(ShadowHeader) != "":
				problem = "live request marked as shadow"
			case r.Header.Get("X-Forwarded-For") != "192.0.2.1":
				problem = "X-Forwarded-For " + r.Header.Get("X-Forwarded-For")
			}
			if problem != "" {
				mu.Lock()
				bad = append(bad, variant+": "+problem+": "+r.URL.String())
				mu.Unlock()
			}
			io.WriteString(w, `{"predictions":[1]}`)
		}
	}
	champion := httptest.NewServer(check("champion"))
	defer champion.Close()
	candidate := httptest.NewServer(check("candidate"))
	defer candidate.Close()
	g, err := New(Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := g.apply(deploy.Traffic{Model: "m",
		Champion:  deploy.Backend{Version: "1", URL: champion.URL + "/base"},
		Candidate: &deploy.Backend{Version: "2", URL: candidate.URL + "/base/"}, ShadowShare: 100}); err != nil {
		f.Fatal(err)
	}
	h := g.Handler()

	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		req.RemoteAddr = "192.0.2.1:1234"
		if req.URL.Host != "" || !strings.HasPrefix(req.RequestURI, "/") {
			return // absolute-form and authority-form targets are for proxies, not this server
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if (rec.Header().Get(VariantHeader) != "" || rec.Code >= 500) && rec.Header().Get(RequestIDHeader) == "" {
			t.Errorf("answer %d without a request ID", rec.Code)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("for %q: %v", raw, bad)
		}
	})
}

// hasDotSegment says whether an escaped path has a segment decoding to "." or "..".
func hasDotSegment(escaped string) bool {
	for s := range strings.SplitSeq(escaped, "/") {
		if d, err := url.PathUnescape(s); err != nil || d == "." || d == ".." {
			return true
		}
	}
	return false
}
