package scoring

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPredictSendsDataframeSplit(t *testing.T) {
	var got Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, http.MethodPost, r.Method)
		assert.Equal(t, "/models/wine/invocations", r.URL.Path)
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		assert.Equal(t, "alice", r.Header.Get("X-Route-Key"))
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got))
		_, _ = io.WriteString(w, `{"predictions": [0, 2.0, "class_1"]}`)
	}))
	defer srv.Close()

	c := &Client{Header: http.Header{"X-Route-Key": {"alice"}}}
	labels, err := c.Predict(context.Background(), srv.URL+"/models/wine/", []string{"a", "b"}, [][]float64{{1, 2}, {3, 4}, {5, 6}})
	require.NoError(t, err)
	assert.Equal(t, []string{"0", "2", "class_1"}, labels)
	require.NotNil(t, got.DataframeSplit)
	assert.Equal(t, []string{"a", "b"}, got.DataframeSplit.Columns)
	assert.Equal(t, [][]float64{{1, 2}, {3, 4}, {5, 6}}, got.DataframeSplit.Data)
	assert.Nil(t, got.Instances)
}

func TestPredictNon2xxIsStatusError(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusServiceUnavailable, http.StatusInternalServerError} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			_, _ = io.WriteString(w, `{"error_code":"X","message":"nope"}`)
		}))
		_, err := (&Client{}).Predict(context.Background(), srv.URL, []string{"a"}, [][]float64{{1}})
		srv.Close()
		var se *StatusError
		require.True(t, errors.As(err, &se), "got %v", err)
		assert.Equal(t, code, se.StatusCode)
		assert.Contains(t, se.Body, "nope")
	}
}

func TestPredictRejectsBadAnswers(t *testing.T) {
	for name, body := range map[string]string{
		"wrong count":    `{"predictions": [1]}`,
		"no predictions": `{"result": [1, 2]}`,
		"not json":       `<html>`,
		"object label":   `{"predictions": [{"a": 1}, 2]}`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, body)
			}))
			defer srv.Close()
			_, err := (&Client{}).Predict(context.Background(), srv.URL, []string{"a"}, [][]float64{{1}, {2}})
			require.Error(t, err)
			var se *StatusError
			assert.False(t, errors.As(err, &se))
		})
	}
}

func TestPredictAcceptsMLflow1BareList(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `[1, "b"]`)
	}))
	defer srv.Close()
	labels, err := (&Client{}).Predict(context.Background(), srv.URL, []string{"a"}, [][]float64{{1}, {2}})
	require.NoError(t, err)
	assert.Equal(t, []string{"1", "b"}, labels)
}

func TestPredictHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := (&Client{}).Predict(ctx, srv.URL, []string{"a"}, [][]float64{{1}})
	require.ErrorIs(t, err, context.Canceled)
}

func TestErrorsHideURLPasswords(t *testing.T) {
	_, err := (&Client{}).Invoke(context.Background(), "http://user:hunter2@127.0.0.1:1/invocations", &Request{Instances: [][]float64{{1}}})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "hunter2")
}

func TestPredictionJSON(t *testing.T) {
	b, err := json.Marshal(Response{Predictions: []Prediction{"0", "2", "1.5", "class_1", "NaN"}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"predictions":[0,2,1.5,"class_1","NaN"]}`, string(b))
	assert.Equal(t, "3", CanonicalLabel("3.000"))
	assert.Equal(t, "x", CanonicalLabel("x"))
}
