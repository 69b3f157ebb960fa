package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
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
	if err := validModelName("model in the path", model); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: body not read: %v", deploy.ErrInvalid, err))
		return
	}
	var t deploy.Traffic
	if err := decodeStrict(raw, &t); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: body is not a traffic object: %v", deploy.ErrInvalid, err))
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
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if err := notSelf(t, local); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
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

// deleteModel removes a model's route: its requests get 404 from then on.
func (g *Gateway) deleteModel(w http.ResponseWriter, r *http.Request) {
	model := r.PathValue("model")
	removed, err := g.remove(model)
	switch {
	case err != nil:
		g.log.Error("route not deleted", "model", model, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("route not deleted, routes unchanged: %v", err))
	case !removed:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no routes for model %q", model))
	default:
		writeJSON(w, http.StatusOK, map[string]string{"deleted": model})
	}
}

// remove unpublishes model's route, after saving the table without it.
func (g *Gateway) remove(model string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := *g.routes.Load()
	if old[model] == nil {
		return false, nil
	}
	next := maps.Clone(old)
	delete(next, model)
	if g.stateFile != "" {
		if err := saveState(g.stateFile, next); err != nil {
			return false, err
		}
	}
	g.routes.Store(&next)
	g.metrics.candidateWeight.DeleteLabelValues(model)
	g.log.Info("route deleted", "model", model)
	return true, nil
}

// maxModelNameLen bounds a model name, which becomes a metric label and a path
// segment; the same bound as a release plan's (plan.ValidName).
const maxModelNameLen = 200

// validModelName accepts what a release plan accepts as a model name (1 to 200 of
// A-Z a-z 0-9 . _ -) except "." and "..": a name is a path segment, a metric label
// value and a log field.
func validModelName(field, name string) error {
	bad := len(name) == 0 || len(name) > maxModelNameLen || name == "." || name == ".."
	for i := 0; i < len(name) && !bad; i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			bad = true
		}
	}
	if !bad {
		return nil
	}
	shown := name
	if len(shown) > 64 {
		shown = shown[:64] + "..."
	}
	return fmt.Errorf("%w: %s %q (%d bytes) is not a model name: use 1 to %d of A-Z, a-z, 0-9, '.', '_' and '-' (not \".\" or \"..\")",
		deploy.ErrInvalid, field, shown, len(name), maxModelNameLen)
}

// notSelf refuses traffic whose champion or candidate URL is this gateway's own
// address (local, the address the admin request came in on): each request would come
// back to the gateway, and again, until descriptors run out. A name the gateway
// cannot tell is itself is still caught per request by the Via header (508).
func notSelf(t deploy.Traffic, local net.Addr) error {
	check := func(variant, raw string) error {
		if pointsAt(raw, local) {
			return fmt.Errorf("%w: %s url %q points at this gateway (%s): the route would loop", deploy.ErrInvalid, variant, raw, local)
		}
		return nil
	}
	if err := check("champion", t.Champion.URL); err != nil || t.Candidate == nil {
		return err
	}
	return check("candidate", t.Candidate.URL)
}

func pointsAt(raw string, local net.Addr) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false // the route's own validation says why
	}
	tcp, ok := local.(*net.TCPAddr)
	if !ok {
		return false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if port != strconv.Itoa(tcp.Port) {
		return false
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") || strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		if name, err := os.Hostname(); err == nil && strings.EqualFold(host, name) {
			return true
		}
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() || ip.Equal(tcp.IP) {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
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
