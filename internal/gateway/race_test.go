package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// Requests with small, chunked and over-1-MiB bodies, answered by both variants and
// mirrored, while the routes change under them (weights, shadow share, the route
// deleted and put back): every answer is the one for its own request, or a 404 while
// the route is gone. Run under -race as well (go test -race ./internal/gateway/).
func TestRaceMixedBodiesWhileRoutesChange(t *testing.T) {
	echo := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"predictions":[%d],"id":%q,"by":%q}`, n, r.Header.Get(RequestIDHeader), name)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	champion, candidate := echo("champion"), echo("candidate")
	g, srv := newTestGateway(t, Options{Shadow: ShadowOptions{MaxQueuedBytes: 8 << 20}})
	traffic := func(weight, shadow int) deploy.Traffic {
		return deploy.Traffic{Model: "m", Champion: deploy.Backend{Version: "1", URL: champion.URL},
			Candidate: &deploy.Backend{Version: "2", URL: candidate.URL}, CandidateWeight: weight, ShadowShare: shadow}
	}
	_, err := g.apply(traffic(0, 0))
	require.NoError(t, err)

	stop := make(chan struct{})
	var changer sync.WaitGroup
	changer.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%7 == 6 {
				_, _ = g.remove("m")
			}
			_, _ = g.apply(traffic(i*13%101, i*29%101))
		}
	})

	sizes := []int{2, 1000, 64 << 10, 1<<20 + 17}
	var clients sync.WaitGroup
	for c := range 4 {
		clients.Go(func() {
			for i := range 12 {
				size := sizes[(c+i)%len(sizes)]
				var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), size))
				if i%2 == 1 {
					body = io.MultiReader(body) // unknown length: sent chunked
				}
				id := "c" + strconv.Itoa(c) + "-" + strconv.Itoa(i)
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/models/m/invocations", body)
				if !assert.NoError(t, err) {
					return
				}
				req.Header.Set(RequestIDHeader, id)
				resp, err := http.DefaultClient.Do(req)
				if !assert.NoError(t, err) {
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.NoError(t, err)
				if resp.StatusCode == http.StatusNotFound {
					continue // the route was deleted for a moment
				}
				assert.Equal(t, http.StatusOK, resp.StatusCode, string(got))
				assert.Equal(t, id, resp.Header.Get(RequestIDHeader))
				want := fmt.Sprintf(`{"predictions":[%d],"id":%q,"by":%q}`, size, id, resp.Header.Get(VariantHeader))
				assert.Equal(t, want, string(got))
			}
		})
	}
	clients.Wait()
	close(stop)
	changer.Wait()
	assert.False(t, strings.Contains(srv.URL, " "))
}
