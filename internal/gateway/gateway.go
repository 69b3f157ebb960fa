// Package gateway is mlrelease's data plane: it routes each model's requests between
// its champion and a candidate by weight (sticky per routing key), mirrors a share of
// champion traffic to the candidate and compares their predictions, joins feedback
// labels with served predictions, exports per-variant metrics, and takes its routes
// from a small admin API that saves them to a state file.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Response headers that tell a client (and a load test) which variant answered.
const (
	VariantHeader = "X-Mlrelease-Variant"
	VersionHeader = "X-Mlrelease-Version"
	// ShadowHeader marks mirrored requests, so a model server can keep them out of
	// side effects (billing, feedback joins).
	ShadowHeader = "X-Mlrelease-Shadow"
	// RequestIDHeader names every answer (and the requests to model servers); feedback
	// labels refer to it. A client's own short ID is kept, else the gateway makes one.
	RequestIDHeader = "X-Request-Id"
)

// Options configures a Gateway. Registerer is required; the rest have defaults.
type Options struct {
	// AdminToken, when not empty, is the bearer token the admin API requires.
	AdminToken string
	// Registerer receives the gateway's metrics. Pass your own registry: a library
	// registering into the global default would collide in tests and embedders.
	Registerer prometheus.Registerer
	// Gatherer is served on /metrics. When nil, Registerer is used if it is also a
	// Gatherer (as *prometheus.Registry is).
	Gatherer prometheus.Gatherer
	// Logger defaults to discarding everything.
	Logger *slog.Logger
	// Transport, when set, reaches the model servers (primary and shadow calls). When
	// nil, NewTransport's is used.
	Transport http.RoundTripper
	Shadow    ShadowOptions
	Feedback  FeedbackOptions
	// RoutingKeyHeader names the request header (such as X-User-ID) whose value always
	// reaches the same variant at a given weight; empty routes every request at random.
	RoutingKeyHeader string
	// StateFile, when not empty, is where applied routes are saved (atomically) and
	// read back by New, so a restarted gateway serves the same routes.
	StateFile string
	// AgreementTolerance is how far two numeric predictions may differ and still agree,
	// relative to their magnitude when above 1. Default 0.01.
	AgreementTolerance float64
	// Now is the clock of the feedback expiry; nil means time.Now.
	Now func() time.Time
	// Peers, when set, lists the base URLs of the gateway's other replicas: feedback
	// this replica cannot join goes to them (see SyncFromPeers for routes).
	Peers func(context.Context) ([]string, error)
}

// ShadowOptions bound the work the shadow mirror may do, so that a slow or dead
// candidate costs at most MaxQueuedBytes of buffered copies (QueueSize of them at
// most), Workers goroutines and Workers answers of MaxBodyBytes.
type ShadowOptions struct {
	// Timeout bounds one mirrored call, response body included. Default 2s.
	Timeout time.Duration
	// QueueSize is how many copies may wait for a worker; more are dropped. Default 256.
	QueueSize int
	// Workers is the number of goroutines sending copies. Default 8.
	Workers int
	// MaxBodyBytes is the largest request body that is mirrored (and the most of a
	// shadow answer read). Default 1 MiB.
	MaxBodyBytes int64
	// MaxQueuedBytes bounds the memory of the copies waiting or being sent: bodies and
	// headers, counted from the moment a copy is queued until its call has ended. A
	// copy that would go over is dropped (and counted as dropped). Default 64 MiB.
	MaxQueuedBytes int64
}

func (o *ShadowOptions) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 256
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = 64 << 20
	}
}

// Gateway routes model traffic. Create it with New, serve Handler, and call Shutdown
// after the http.Server has stopped.
type Gateway struct {
	log      *slog.Logger
	gatherer prometheus.Gatherer
	metrics  *metrics
	// wantAuth is the SHA-256 of the expected Authorization header; nil when the admin
	// API is open. Hashing makes the comparison constant-time in the token's length too.
	wantAuth *[sha256.Size]byte

	// routes is an immutable table replaced as a whole, so the data plane reads it
	// without locks; mu serializes the admin writers that replace it.
	routes    atomic.Pointer[table]
	mu        sync.Mutex
	stateFile string

	routingKeyHeader string
	tolerance        float64
	idPrefix         string
	idCounter        atomic.Uint64
	// via is this gateway's entry in the Via header of the requests it sends; seeing
	// it on a request it receives means a route leads back to itself.
	via      string
	feedback *feedbackStore
	peers    func(context.Context) ([]string, error)
	draining atomic.Bool

	// transport makes every call to a model server; proxy wraps it for upgrades.
	transport http.RoundTripper
	proxy     *httputil.ReverseProxy
	shadow    *mirror
	handler   http.Handler
}

// New returns a Gateway with the routes saved in Options.StateFile (none without one);
// its shadow workers run until Shutdown.
func New(opts Options) (*Gateway, error) {
	if opts.Registerer == nil {
		return nil, errors.New("gateway: Options.Registerer is required")
	}
	if opts.Gatherer == nil {
		g, ok := opts.Registerer.(prometheus.Gatherer)
		if !ok {
			return nil, errors.New("gateway: Options.Gatherer is required when Registerer is not a Gatherer")
		}
		opts.Gatherer = g
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport()
	}
	opts.Shadow.setDefaults()
	opts.Feedback.setDefaults()
	if opts.AgreementTolerance <= 0 {
		opts.AgreementTolerance = 0.01
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}

	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	routes := table{}
	if opts.StateFile != "" {
		removeStaleSaves(opts.StateFile, opts.Logger)
		if routes, err = loadState(opts.StateFile, m); err != nil {
			return nil, err
		}
	}
	var prefix [6]byte
	_, _ = rand.Read(prefix[:])
	g := &Gateway{
		log:              opts.Logger,
		gatherer:         opts.Gatherer,
		metrics:          m,
		stateFile:        opts.StateFile,
		routingKeyHeader: http.CanonicalHeaderKey(opts.RoutingKeyHeader),
		tolerance:        opts.AgreementTolerance,
		idPrefix:         hex.EncodeToString(prefix[:]) + "-",
		via:              "1.1 mlrelease-" + hex.EncodeToString(prefix[:]),
		feedback:         newFeedbackStore(opts.Feedback, opts.Now),
		peers:            opts.Peers,
	}
	if opts.AdminToken != "" {
		sum := sha256.Sum256([]byte("Bearer " + opts.AdminToken))
		g.wantAuth = &sum
	}
	g.routes.Store(&routes)
	for model, rt := range routes {
		m.candidateWeight.WithLabelValues(model).Set(float64(rt.applied.CandidateWeight) / 100)
	}
	if len(routes) > 0 {
		g.log.Info("routes restored", "file", opts.StateFile, "models", len(routes))
	}
	g.transport = opts.Transport
	g.proxy = g.newProxy(opts.Transport)
	g.shadow = newMirror(opts.Shadow, opts.Transport, m, opts.Logger)
	g.handler = g.newHandler()
	return g, nil
}

// Handler serves the data plane (/models/{model}/...), the admin API (/admin/v1/...),
// /metrics, /healthz and /readyz.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Drain makes /readyz answer 503, so a load balancer stops sending new requests while
// the ones in flight finish. Call it before http.Server.Shutdown.
func (g *Gateway) Drain() { g.draining.Store(true) }

// Shutdown stops mirroring: it waits for queued copies to be sent, and when ctx ends
// first it abandons the calls still in flight. Call it after http.Server.Shutdown.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.Drain()
	return g.shadow.shutdown(ctx)
}

func (g *Gateway) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/models/{model}/{rest...}", g.serveModel)

	mux.Handle("GET /admin/v1/models", g.authorized(http.HandlerFunc(g.listModels)))
	mux.Handle("GET /admin/v1/models/{model}", g.authorized(http.HandlerFunc(g.getModel)))
	mux.Handle("PUT /admin/v1/models/{model}", g.authorized(http.HandlerFunc(g.putModel)))
	mux.Handle("DELETE /admin/v1/models/{model}", g.authorized(http.HandlerFunc(g.deleteModel)))
	mux.HandleFunc("POST /feedback", g.postFeedback)

	mux.Handle("GET /metrics", promhttp.HandlerFor(g.gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelError)}))
	// Liveness: the process serves. Readiness: it has its routes (read before the
	// listener opens) and is not draining.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if g.draining.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "models": len(*g.routes.Load())})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Before any routing: a path that climbs out of its prefix once decoded
		// (%2e%2e) would reach other endpoints of a model server.
		if seg, ok := dotSegment(r); ok {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("path segment %q is not allowed: it decodes to a dot segment or holds an encoded slash", seg))
			return
		}
		if model, rest, ok := modelPath(r); ok {
			g.serveModelPath(w, r, model, rest)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Bounds of NewTransport.
const (
	// MaxResponseHeaderBytes bounds an answer's headers (1xx answers' included); a
	// model server going over gets its caller a 502. nginx's default is 4-8 KiB.
	MaxResponseHeaderBytes = 64 << 10
	// UpstreamIdleTimeout closes idle connections to model servers before uvicorn
	// (5 s, the commonest model server's default) does, so a request is not sent on a
	// connection its server is about to close.
	UpstreamIdleTimeout = 4 * time.Second
	// UpstreamHeaderTimeout bounds the wait for an answer's headers once the request
	// is sent: a model server that accepts a request and never answers must not hold
	// a client and a goroutine forever.
	UpstreamHeaderTimeout = time.Minute
)

// NewTransport is the gateway's default Transport to model servers: an
// UpstreamTransport over plain HTTP/1.1, with net/http's Transport (tuned for a proxy)
// for https, upgrades and streamed bodies.
func NewTransport() *UpstreamTransport {
	dial := (&net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
	}).DialContext
	return &UpstreamTransport{
		Fallback:               newHTTPTransport(dial),
		Dial:                   dial,
		MaxInMemoryBody:        1 << 20,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        UpstreamIdleTimeout,
		ResponseHeaderTimeout:  UpstreamHeaderTimeout,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
	}
}

// newHTTPTransport is net/http's Transport, which drops a connection with unsolicited
// bytes, retries only what is safe to retry and speaks HTTP/2 to https servers that
// offer it, tuned for a proxy.
func newHTTPTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		// Model servers are reached directly: an HTTP_PROXY meant for the outside world
		// must not capture them.
		Proxy:               nil,
		DialContext:         dial,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		// The default of 2 idle connections per host makes a busy gateway open a new
		// connection to the model server for almost every request.
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        UpstreamIdleTimeout,
		ResponseHeaderTimeout:  UpstreamHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		// A proxy passes answers through as they come: the Transport must not ask for
		// gzip on the client's behalf and unpack it.
		DisableCompression: true,
	}
}
