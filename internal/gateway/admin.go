package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// maxAdminBody bounds a PUT body; a Traffic is a few hundred bytes.
const maxAdminBody = 64 << 10

// authorized requires the admin bearer token when one is configured. The token is
// compared as a hash in constant time and never logged or echoed.
func (g *Gateway) authorized(next http.Handler) http.Handler {
	if g.wantAuth == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], g.wantAuth[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mlrelease-gateway"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *Gateway) listModels(w http.ResponseWriter, _ *http.Request) {
	routes := *g.routes.Load()
	out := make([]deploy.Applied, 0, len(routes))
	for _, model := range slices.Sorted(maps.Keys(routes)) {
		out = append(out, routes[model].applied)
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) getModel(w http.ResponseWriter, r *http.Request) {
	model := r.PathValue("model")
	rt := (*g.routes.Load())[model]
	if rt == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no routes for model %q", model))
		return
	}
	writeJSON(w, http.StatusOK, rt.applied)
}

func (g *Gateway) putModel(w http.ResponseWriter, r *http.Request) {
	model := r.PathValue("model")
	var t deploy.Traffic
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	// A field this gateway does not know is a routing wish it cannot honour.
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: body is not a traffic object: %v", deploy.ErrInvalid, err))
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: body has data after the traffic object", deploy.ErrInvalid))
		return
	}
	switch t.Model {
	case "":
		t.Model = model
	case model:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: model %q in the body does not match %q in the path", deploy.ErrInvalid, t.Model, model))
		return
	}
	applied, err := g.apply(t)
	switch {
	case errors.Is(err, deploy.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		g.log.Error("traffic not applied", "model", t.Model, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("traffic not applied, routes unchanged: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, applied)
}

// apply publishes t as the model's route, after saving it to the state file when there
// is one (a route that could not be saved is not published). The same traffic again
// keeps the revision, so a retried activity changes nothing.
func (g *Gateway) apply(t deploy.Traffic) (deploy.Applied, error) {
	rt, err := newRoute(t, g.metrics)
	if err != nil {
		return deploy.Applied{}, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := *g.routes.Load()
	prev := old[t.Model]
	if prev != nil && sameTraffic(prev.applied.Traffic, rt.applied.Traffic) {
		return prev.applied, nil
	}
	rt.applied.Revision = 1
	if prev != nil {
		rt.applied.Revision = prev.applied.Revision + 1
	}
	next := maps.Clone(old)
	next[t.Model] = rt
	if g.stateFile != "" {
		if err := saveState(g.stateFile, next); err != nil {
			return deploy.Applied{}, err
		}
	}
	g.routes.Store(&next)
	g.metrics.candidateWeight.WithLabelValues(t.Model).Set(float64(t.CandidateWeight) / 100)

	a := rt.applied
	attrs := []any{"model", a.Model, "revision", a.Revision, "champion", a.Champion.Version,
		"candidate_weight", a.CandidateWeight, "shadow_share", a.ShadowShare}
	if a.Candidate != nil {
		attrs = append(attrs, "candidate", a.Candidate.Version)
	}
	g.log.Info("traffic applied", attrs...)
	return a, nil
}

func sortApplied(as []deploy.Applied) {
	slices.SortFunc(as, func(a, b deploy.Applied) int { return strings.Compare(a.Model, b.Model) })
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client has gone if this fails
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": strings.TrimSpace(msg)})
}
