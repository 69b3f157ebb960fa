package gateway

// UpstreamTransport on its own, beyond the conformance suite (which runs through it):
// connection reuse, a model server closing idle connections sooner than the gateway,
// timeouts and cancellation, and what it leaves to net/http's Transport.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingTransport is NewTransport with its dials counted: its own and Fallback's.
func countingTransport() (*UpstreamTransport, *atomic.Int32, *atomic.Int32) {
	tr := NewTransport()
	var own, fallback atomic.Int32
	dial := tr.Dial
	tr.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		own.Add(1)
		return dial(ctx, network, addr)
	}
	tr.Fallback.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		fallback.Add(1)
		return dial(ctx, network, addr)
	}
	return tr, &own, &fallback
}

// ownConnections skips a test of UpstreamTransport's own connections where it has
// none (no idle check written for the platform: everything goes to Fallback).
func ownConnections(t *testing.T) {
	t.Helper()
	if !peekSupported {
		t.Skip("UpstreamTransport leaves every call to net/http's Transport on " + runtime.GOOS)
	}
}

func roundTrip(t *testing.T, tr http.RoundTripper, ctx context.Context, method, url, id string, body io.Reader) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	require.NoError(t, err)
	req.Header.Set(RequestIDHeader, id)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func TestUpstreamTransportReusesConnections(t *testing.T) {
	ownConnections(t)
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for req, _ := readReq(br); req != nil; req, _ = readReq(br) {
			answer(c, req)
		}
	})
	tr, own, fallback := countingTransport()
	for i := range 50 {
		method, body := http.MethodPost, io.Reader(strings.NewReader("{}"))
		if i%2 == 1 {
			method, body = http.MethodGet, nil
		}
		resp, got, err := roundTrip(t, tr, context.Background(), method, up+"/invocations", "r", body)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "fresh:r", got)
	}
	assert.EqualValues(t, 1, own.Load(), "connections opened")
	assert.EqualValues(t, 0, fallback.Load())
}

// A model server with a shorter idle timeout than the gateway's closes the connection
// first: the next request, with a body or without, goes on a new one, once.
func TestUpstreamTransportServerClosedIdleConnection(t *testing.T) {
	ownConnections(t)
	closed := make(chan struct{})
	var seen atomic.Int32
	up := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		for req, _ := readReq(br); req != nil; req, _ = readReq(br) {
			seen.Add(1)
			answer(c, req)
			if i == 0 {
				c.Close() // idle timeout over; no Connection: close said
				close(closed)
				return
			}
		}
	})
	tr, own, _ := countingTransport()
	_, got, err := roundTrip(t, tr, context.Background(), http.MethodPost, up+"/invocations", "first", strings.NewReader("{}"))
	require.NoError(t, err)
	require.Equal(t, "fresh:first", got)
	<-closed
	_, got, err = roundTrip(t, tr, context.Background(), http.MethodPost, up+"/invocations", "second", strings.NewReader("{}"))
	require.NoError(t, err)
	assert.Equal(t, "fresh:second", got)
	_, got, err = roundTrip(t, tr, context.Background(), http.MethodGet, up+"/invocations", "third", nil)
	require.NoError(t, err)
	assert.Equal(t, "fresh:third", got)
	assert.EqualValues(t, 2, own.Load(), "connections opened")
	assert.EqualValues(t, 3, seen.Load(), "requests the model server got")
}

func TestUpstreamTransportHeaderTimeout(t *testing.T) {
	ownConnections(t)
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if req, _ := readReq(br); req != nil {
			_, _ = io.Copy(io.Discard, br) // never answers
		}
	})
	tr := NewTransport()
	tr.ResponseHeaderTimeout = 20 * time.Millisecond
	_, _, err := roundTrip(t, tr, context.Background(), http.MethodPost, up+"/invocations", "slow", strings.NewReader("{}"))
	require.Error(t, err)
	assert.Equal(t, http.StatusGatewayTimeout, upstreamErrorCode(err), "%v", err)

	// Through the gateway: a 504 for the client.
	g := newGateway(t, Options{Transport: tr})
	routeTo(t, g, up, "", 0)
	rec := serve(g, http.MethodPost, "/models/m/invocations", "{}", nil)
	assert.Equal(t, http.StatusGatewayTimeout, rec.Code)
}

// A cancelled request ends at once, whether it waits for the answer's headers or is
// reading its body, and its connection (cut midway) is never reused.
func TestUpstreamTransportCancellation(t *testing.T) {
	ownConnections(t)
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for req, _ := readReq(br); req != nil; req, _ = readReq(br) {
			switch req.Header.Get(RequestIDHeader) {
			case "headers":
				_, _ = io.Copy(io.Discard, br)
				return
			case "body":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
				_, _ = io.Copy(io.Discard, br)
				return
			}
			answer(c, req)
		}
	})
	tr, own, _ := countingTransport()

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, _, err := roundTrip(t, tr, ctx, http.MethodPost, up+"/invocations", "headers", strings.NewReader("{}"))
	assert.ErrorIs(t, err, context.Canceled)

	ctx, cancel = context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, up+"/invocations", nil)
	require.NoError(t, err)
	req.Header.Set(RequestIDHeader, "body")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	cancel()
	_, err = io.ReadAll(resp.Body)
	assert.ErrorIs(t, err, context.Canceled)
	resp.Body.Close()

	_, got, err := roundTrip(t, tr, context.Background(), http.MethodPost, up+"/invocations", "after", strings.NewReader("{}"))
	require.NoError(t, err)
	assert.Equal(t, "fresh:after", got)
	assert.EqualValues(t, 3, own.Load(), "connections opened: the cut ones were reused")
}

// An answer closed before its end takes its connection with it: the rest of it must
// not become the next answer.
func TestUpstreamTransportEarlyCloseDropsConnection(t *testing.T) {
	ownConnections(t)
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for req, _ := readReq(br); req != nil; req, _ = readReq(br) {
			if req.Header.Get(RequestIDHeader) == "long" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
				continue // the other half never comes
			}
			answer(c, req)
		}
	})
	tr, own, _ := countingTransport()
	req, err := http.NewRequest(http.MethodGet, up+"/invocations", nil)
	require.NoError(t, err)
	req.Header.Set(RequestIDHeader, "long")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	closed := make(chan error)
	go func() { closed <- resp.Body.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("closing an unfinished answer waited for the rest of it")
	}
	_, got, err := roundTrip(t, tr, context.Background(), http.MethodGet, up+"/invocations", "next", nil)
	require.NoError(t, err)
	assert.Equal(t, "fresh:next", got)
	assert.EqualValues(t, 2, own.Load(), "connections opened")
}

// Streamed bodies (unknown length, or over MaxInMemoryBody) and upgrades go to
// net/http's Transport.
func TestUpstreamTransportLeavesStreamsToFallback(t *testing.T) {
	ownConnections(t)
	up := rawUpstream(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for req, _ := readReq(br); req != nil; req, _ = readReq(br) {
			answer(c, req)
		}
	})
	tr, own, fallback := countingTransport()
	tr.MaxInMemoryBody = 8
	req, err := http.NewRequest(http.MethodPost, up+"/invocations", io.MultiReader(strings.NewReader("{}")))
	require.NoError(t, err)
	req.ContentLength = -1
	req.Header.Set(RequestIDHeader, "chunked")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "fresh:chunked", string(b))
	_, got, err := roundTrip(t, tr, context.Background(), http.MethodPost, up+"/invocations", "large", strings.NewReader(strings.Repeat("x", 9)))
	require.NoError(t, err)
	assert.Equal(t, "fresh:large", got)
	assert.EqualValues(t, 0, own.Load())
	assert.EqualValues(t, 1, fallback.Load())
}

func TestUpstreamTransportRefusesInvalidHeaders(t *testing.T) {
	tr := NewTransport()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
	require.NoError(t, err)
	req.Header["X-Bad"] = []string{"a\r\nX-Injected: 1"}
	_, err = tr.RoundTrip(req)
	require.Error(t, err)
	req.Header = http.Header{"Bad Name": {"x"}}
	_, err = tr.RoundTrip(req)
	require.Error(t, err)
	var ne net.Error
	assert.False(t, errors.As(err, &ne), "refused before any dial: %v", err)
}
