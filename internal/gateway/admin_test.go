package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

const testToken = "s3cret-admin-token"

// admin sends one admin request and returns the status and body.
func admin(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func decodeApplied(t *testing.T, body string) deploy.Applied {
	t.Helper()
	var a deploy.Applied
	require.NoError(t, json.Unmarshal([]byte(body), &a), body)
	return a
}

const irisTraffic = `{"champion":{"version":"1","url":"http://champion:8080"},
	"candidate":{"version":"2","url":"http://candidate:8080"},"candidateWeight":10,"shadowShare":50}`

func TestAdminPutGetRoundTripAndIdempotentRevision(t *testing.T) {
	_, srv := newTestGateway(t, Options{})
	models := srv.URL + "/admin/v1/models"

	code, body := admin(t, "GET", models, "", "")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `[]`, body)

	code, body = admin(t, "PUT", models+"/iris", "", irisTraffic)
	require.Equal(t, http.StatusOK, code, body)
	put := decodeApplied(t, body)
	assert.Equal(t, int64(1), put.Revision)
	assert.Equal(t, "iris", put.Model, "the path names the model when the body does not")
	assert.Equal(t, 10, put.CandidateWeight)
	assert.Equal(t, "2", put.Candidate.Version)

	code, body = admin(t, "GET", models+"/iris", "", "")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, put, decodeApplied(t, body))

	_, body = admin(t, "PUT", models+"/iris", "", irisTraffic)
	assert.Equal(t, int64(1), decodeApplied(t, body).Revision, "same traffic, same revision")

	changed := strings.Replace(irisTraffic, `"candidateWeight":10`, `"candidateWeight":25`, 1)
	_, body = admin(t, "PUT", models+"/iris", "", changed)
	assert.Equal(t, int64(2), decodeApplied(t, body).Revision)

	withModel := `{"model":"wine","champion":{"version":"7","url":"http://wine:8080"}}`
	code, _ = admin(t, "PUT", models+"/wine", "", withModel)
	assert.Equal(t, http.StatusOK, code)

	_, body = admin(t, "GET", models, "", "")
	var all []deploy.Applied
	require.NoError(t, json.Unmarshal([]byte(body), &all))
	require.Len(t, all, 2)
	assert.Equal(t, "iris", all[0].Model)
	assert.Equal(t, int64(2), all[0].Revision)
	assert.Equal(t, "wine", all[1].Model)
	assert.Nil(t, all[1].Candidate)

	code, body = admin(t, "GET", models+"/nope", "", "")
	assert.Equal(t, http.StatusNotFound, code)
	assert.JSONEq(t, `{"error":"no routes for model \"nope\""}`, body)
}

func TestAdminRefusesBadTrafficAndKeepsState(t *testing.T) {
	_, srv := newTestGateway(t, Options{})
	iris := srv.URL + "/admin/v1/models/iris"
	code, before := admin(t, "PUT", iris, "", irisTraffic)
	require.Equal(t, http.StatusOK, code)

	for _, tc := range []struct{ name, body, wantInError string }{
		{"not json", `{"champion":`, "not a traffic object"},
		{"unknown field", `{"candidateWieght":5,"champion":{"version":"1","url":"http://c"}}`, "candidateWieght"},
		{"trailing data", irisTraffic + `{}`, "data after"},
		{"weight out of range", strings.Replace(irisTraffic, `"candidateWeight":10`, `"candidateWeight":150`, 1), "candidateWeight 150"},
		{"shadow out of range", strings.Replace(irisTraffic, `"shadowShare":50`, `"shadowShare":-1`, 1), "shadowShare -1"},
		{"weight without candidate", `{"champion":{"version":"1","url":"http://c"},"candidateWeight":5}`, "need a candidate"},
		{"champion without url", `{"champion":{"version":"1"}}`, "champion needs a version and a url"},
		{"relative url", `{"champion":{"version":"1","url":"champion:8080"}}`, `champion url "champion:8080"`},
		{"model mismatch", `{"model":"wine","champion":{"version":"1","url":"http://c"}}`, `model "wine" in the body does not match "iris"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := admin(t, "PUT", iris, "", tc.body)
			assert.Equal(t, http.StatusBadRequest, code)
			var e map[string]string
			require.NoError(t, json.Unmarshal([]byte(body), &e), body)
			assert.Contains(t, e["error"], tc.wantInError)

			code, after := admin(t, "GET", iris, "", "")
			assert.Equal(t, http.StatusOK, code)
			assert.JSONEq(t, before, after, "a refused PUT changes nothing")
		})
	}
}

func TestAdminRequiresToken(t *testing.T) {
	var logs bytes.Buffer
	_, srv := newTestGateway(t, Options{AdminToken: testToken, Logger: bufferLogger(&logs)})
	iris := srv.URL + "/admin/v1/models/iris"

	for _, token := range []string{"", "wrong", testToken + "x", strings.ToUpper(testToken)} {
		for _, method := range []string{"GET", "PUT"} {
			code, body := admin(t, method, iris, token, irisTraffic)
			assert.Equal(t, http.StatusUnauthorized, code, "%s with token %q", method, token)
			assert.NotContains(t, body, testToken)
		}
		code, _ := admin(t, "GET", srv.URL+"/admin/v1/models", token, "")
		assert.Equal(t, http.StatusUnauthorized, code)
	}

	code, body := admin(t, "PUT", iris, testToken, irisTraffic)
	assert.Equal(t, http.StatusOK, code)
	assert.NotContains(t, body, testToken)
	code, _ = admin(t, "GET", iris, testToken, "")
	assert.Equal(t, http.StatusOK, code)

	// The data plane and probes stay open.
	code, _ = admin(t, "GET", srv.URL+"/healthz", "", "")
	assert.Equal(t, http.StatusOK, code)

	assert.Contains(t, logs.String(), "traffic applied")
	assert.NotContains(t, logs.String(), testToken)
}

// Concurrent writers must leave one consistent history: every distinct traffic gets
// its own revision, and the final state is the one with the highest revision.
func TestAdminConcurrentPuts(t *testing.T) {
	g, srv := newTestGateway(t, Options{})
	iris := srv.URL + "/admin/v1/models/iris"
	const writers, puts = 8, 25

	var mu sync.Mutex
	byRevision := map[int64]int{} // revision -> candidate weight
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range puts {
				weight := (w*puts + i) % 101
				body := strings.Replace(irisTraffic, `"candidateWeight":10`, fmt.Sprintf(`"candidateWeight":%d`, weight), 1)
				code, resp := admin(t, "PUT", iris, "", body)
				if !assert.Equal(t, http.StatusOK, code, resp) {
					return
				}
				a := decodeApplied(t, resp)
				mu.Lock()
				if prev, ok := byRevision[a.Revision]; ok {
					assert.Equal(t, prev, a.CandidateWeight, "revision %d names two traffics", a.Revision)
				}
				byRevision[a.Revision] = a.CandidateWeight
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	_, body := admin(t, "GET", iris, "", "")
	final := decodeApplied(t, body)
	maxRev := int64(0)
	for rev := range byRevision {
		maxRev = max(maxRev, rev)
	}
	assert.Equal(t, maxRev, final.Revision)
	assert.Equal(t, byRevision[maxRev], final.CandidateWeight)
	assert.InDelta(t, float64(final.CandidateWeight)/100, gaugeValue(g, "iris"), 1e-9, "the gauge follows the last change")
}
