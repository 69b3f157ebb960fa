// Package gateway is mlrelease's data plane: it routes each model's requests between
// its champion and a candidate by weight, mirrors a share of champion traffic to the
// candidate, exports per-variant metrics, and takes its routes from a small admin API.
package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	// Transport reaches the model servers; nil means a tuned clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	Shadow    ShadowOptions
}

// ShadowOptions bound the work the shadow mirror may do, so that a slow or dead
// candidate costs at most QueueSize buffered bodies and Workers goroutines.
type ShadowOptions struct {
	// Timeout bounds one mirrored call, response body included. Default 2s.
	Timeout time.Duration
	// QueueSize is how many copies may wait for a worker; more are dropped. Default 256.
	QueueSize int
	// Workers is the number of goroutines sending copies. Default 8.
	Workers int
	// MaxBodyBytes is the largest request body that is mirrored. Default 1 MiB.
	MaxBodyBytes int64
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
	routes atomic.Pointer[table]
	mu     sync.Mutex

	rand    *lockedRand
	proxy   *httputil.ReverseProxy
	shadow  *mirror
	handler http.Handler
}

// New returns a Gateway with no routes; its shadow workers run until Shutdown.
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
		opts.Transport = defaultTransport()
	}
	opts.Shadow.setDefaults()

	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("gateway: register metrics: %w", err)
	}
	g := &Gateway{
		log:      opts.Logger,
		gatherer: opts.Gatherer,
		metrics:  m,
		rand:     newLockedRand(),
	}
	if opts.AdminToken != "" {
		sum := sha256.Sum256([]byte("Bearer " + opts.AdminToken))
		g.wantAuth = &sum
	}
	g.routes.Store(&table{})
	g.proxy = g.newProxy(opts.Transport)
	g.shadow = newMirror(opts.Shadow, opts.Transport, m, opts.Logger)
	g.handler = g.newHandler()
	return g, nil
}

// Handler serves the data plane (/models/{model}/...), the admin API (/admin/v1/...),
// /metrics, /healthz and /readyz.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Shutdown stops mirroring: it waits for queued copies to be sent, and when ctx ends
// first it abandons the calls still in flight. Call it after http.Server.Shutdown.
func (g *Gateway) Shutdown(ctx context.Context) error {
	return g.shadow.shutdown(ctx)
}

func (g *Gateway) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/models/{model}/{rest...}", g.serveModel)

	mux.Handle("GET /admin/v1/models", g.authorized(http.HandlerFunc(g.listModels)))
	mux.Handle("GET /admin/v1/models/{model}", g.authorized(http.HandlerFunc(g.getModel)))
	mux.Handle("PUT /admin/v1/models/{model}", g.authorized(http.HandlerFunc(g.putModel)))

	mux.Handle("GET /metrics", promhttp.HandlerFor(g.gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelError)}))
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	return mux
}

func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// The default of 2 idle connections per host makes a busy gateway open a new
	// connection to the model server for almost every request.
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	// A model server that accepts a request and never answers must not hold the
	// client and a goroutine forever.
	t.ResponseHeaderTimeout = time.Minute
	return t
}

// lockedRand is a per-gateway source of routing draws. *rand.Rand is not safe for
// concurrent use, and handlers draw concurrently.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newLockedRand() *lockedRand {
	return &lockedRand{r: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// Float64 returns a uniform draw in [0, 1).
func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}
