package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// ServerOptions configure NewServer. Only Weights is required.
type ServerOptions struct {
	Weights *Weights
	// Version is the label GET /version reports; empty means Weights.Version.
	Version string
	// ErrorRate is the share (0..1) of invocations answered 503, drawn from a
	// generator seeded by Seed.
	ErrorRate float64
	// Latency is added to every invocation before it is answered.
	Latency time.Duration
	// Degrade (0..1) corrupts the weights with Weights.Degrade(Degrade, Seed).
	Degrade float64
	Seed    uint64
	// Logger receives one debug line per invocation; nil discards logs.
	Logger *slog.Logger
}

// Validate reports the first option NewServer refuses.
func (o ServerOptions) Validate() error {
	switch {
	case o.Weights == nil:
		return errors.New("no model weights")
	case !(o.ErrorRate >= 0 && o.ErrorRate <= 1):
		return fmt.Errorf("error rate %v is outside 0..1", o.ErrorRate)
	case !(o.Degrade >= 0 && o.Degrade <= 1):
		return fmt.Errorf("degrade %v is outside 0..1", o.Degrade)
	case o.Latency < 0:
		return fmt.Errorf("latency %v is negative", o.Latency)
	}
	return o.Weights.Validate()
}

// maxRequestBytes bounds an invocation's body.
const maxRequestBytes = 8 << 20

// server answers MLflow's scoring protocol for one model.
type server struct {
	opts    ServerOptions
	weights *Weights
	log     *slog.Logger

	mu  sync.Mutex // guards rng
	rng *rand.Rand
}

// NewServer returns a handler speaking MLflow's scoring protocol for one model:
// POST /invocations (dataframe_split or instances), GET /ping and /health (200), and
// GET /version (the version label and the injected faults).
func NewServer(opts ServerOptions) (http.Handler, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("model server: %w", err)
	}
	if opts.Version == "" {
		opts.Version = opts.Weights.Version
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{
		opts:    opts,
		weights: opts.Weights.Degrade(opts.Degrade, opts.Seed),
		log:     log,
		rng:     rand.New(rand.NewPCG(opts.Seed, 0x6572726f7273)),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /invocations", s.invocations)
	mux.HandleFunc("GET /ping", s.ping)
	mux.HandleFunc("GET /health", s.ping)
	mux.HandleFunc("GET /version", s.version)
	return mux, nil
}

func (s *server) ping(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}\n"))
}

// VersionInfo is the body of GET /version.
type VersionInfo struct {
	Version      string   `json:"version"`
	ModelVersion string   `json:"model_version"`
	Classes      []string `json:"classes"`
	Columns      []string `json:"columns"`
	ErrorRate    float64  `json:"error_rate"`
	LatencyMS    float64  `json:"latency_ms"`
	Degrade      float64  `json:"degrade"`
}

func (s *server) version(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, VersionInfo{
		Version:      s.opts.Version,
		ModelVersion: s.opts.Weights.Version,
		Classes:      s.weights.Classes,
		Columns:      s.weights.Columns,
		ErrorRate:    s.opts.ErrorRate,
		LatencyMS:    float64(s.opts.Latency) / float64(time.Millisecond),
		Degrade:      s.opts.Degrade,
	})
}

func (s *server) invocations(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// Read the whole body first: only then does net/http notice a client that hangs
	// up, which ends the added latency early.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		status, code := http.StatusBadRequest, "BAD_REQUEST"
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status, code = http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE"
		}
		writeJSON(w, status, scoring.ErrorResponse{ErrorCode: code, Message: fmt.Sprintf("read body: %v", err)})
		return
	}
	if s.opts.Latency > 0 {
		t := time.NewTimer(s.opts.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client left; nobody reads an answer
		}
	}
	if s.fail() {
		s.log.Debug("injected error", "version", s.opts.Version)
		writeJSON(w, http.StatusServiceUnavailable, scoring.ErrorResponse{
			ErrorCode: "TEMPORARILY_UNAVAILABLE", Message: "injected error (-error-rate)",
		})
		return
	}
	var req scoring.Request
	if err := json.Unmarshal(body, &req); err != nil {
		badRequest(w, fmt.Sprintf("decode body: %v", err))
		return
	}
	rows, err := s.rows(&req)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	preds := make([]scoring.Prediction, len(rows))
	for i, row := range rows {
		preds[i] = scoring.Prediction(s.weights.Predict(row))
	}
	writeJSON(w, http.StatusOK, scoring.Response{Predictions: preds})
	s.log.Debug("invocation", "version", s.opts.Version, "rows", len(rows), "took", time.Since(start))
}

// rows returns the request's rows in the model's column order.
func (s *server) rows(req *scoring.Request) ([][]float64, error) {
	d := len(s.weights.Columns)
	switch {
	case req.DataframeSplit != nil && req.Instances != nil:
		return nil, errors.New(`send either "dataframe_split" or "instances", not both`)
	case req.Instances != nil:
		for i, row := range req.Instances {
			if len(row) != d {
				return nil, fmt.Errorf("instance %d has %d values, the model needs %d: %v", i, len(row), d, s.weights.Columns)
			}
		}
		return req.Instances, nil
	case req.DataframeSplit != nil:
		df := req.DataframeSplit
		idx, err := s.weights.Align(df.Columns)
		if err != nil {
			return nil, err
		}
		rows := make([][]float64, len(df.Data))
		for i, in := range df.Data {
			if len(in) != len(df.Columns) {
				return nil, fmt.Errorf("row %d has %d values for %d columns", i, len(in), len(df.Columns))
			}
			rows[i] = make([]float64, d)
			for j, at := range idx {
				rows[i][j] = in[at]
			}
		}
		return rows, nil
	}
	return nil, errors.New(`the body needs "dataframe_split" {"columns", "data"} or "instances"`)
}

func (s *server) fail() bool {
	if s.opts.ErrorRate == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < s.opts.ErrorRate
}

func badRequest(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, scoring.ErrorResponse{ErrorCode: "BAD_REQUEST", Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
