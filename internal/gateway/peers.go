package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"time"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// Replicas of one gateway receive the same route changes in the same order (the
// deployer applies each to all of them), so for a model, a higher revision is a
// later state. A replica that starts fresh, or restarts from a state file older than
// its peers', takes its peers' newest routes before it serves; a feedback label that
// reaches a replica which did not serve the prediction is passed to its peers.

// forwardedFeedback marks feedback one replica passed to another, which does not
// pass it on again.
const forwardedFeedback = "X-Mlrelease-Feedback-Forwarded"

// peerTimeout bounds each call to a peer.
const peerTimeout = 2 * time.Second

// Adopt makes the gateway serve a's routes, with a's revision, when a is newer than
// what it serves for that model (a higher revision, or nothing yet). It reports
// whether it changed anything.
func (g *Gateway) Adopt(a deploy.Applied) (bool, error) {
	rt, err := newRoute(a.Traffic, g.metrics)
	if err != nil {
		return false, err
	}
	rt.applied.Revision = a.Revision
	g.mu.Lock()
	defer g.mu.Unlock()
	old := *g.routes.Load()
	if prev := old[a.Model]; prev != nil && prev.applied.Revision >= a.Revision {
		return false, nil
	}
	next := maps.Clone(old)
	next[a.Model] = rt
	if g.stateFile != "" {
		if err := saveState(g.stateFile, next); err != nil {
			return false, err
		}
	}
	g.routes.Store(&next)
	g.metrics.candidateWeight.WithLabelValues(a.Model).Set(float64(a.CandidateWeight) / 100)
	g.log.Info("routes adopted from a peer", "model", a.Model, "revision", a.Revision, "candidate_weight", a.CandidateWeight)
	return true, nil
}

// SyncFromPeers asks each peer (base URLs of the other replicas) for its routes and
// adopts, model by model, the newest. A peer that cannot be reached is skipped: the
// first replica to start has none. It returns how many models it adopted.
func (g *Gateway) SyncFromPeers(ctx context.Context, peers []string, token string) (int, error) {
	hc := &http.Client{Timeout: peerTimeout}
	newest := map[string]deploy.Applied{}
	for _, base := range peers {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/v1/models", nil)
		if err != nil {
			return 0, fmt.Errorf("peer %s: %w", base, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			g.log.Warn("peer not reached for routes", "peer", base, "error", err)
			continue
		}
		var routes []deploy.Applied
		err = json.NewDecoder(io.LimitReader(resp.Body, maxAdminBody*64)).Decode(&routes)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			g.log.Warn("peer gave no routes", "peer", base, "status", resp.StatusCode, "error", err)
			continue
		}
		for _, a := range routes {
			if have, ok := newest[a.Model]; !ok || a.Revision > have.Revision {
				newest[a.Model] = a
			}
		}
	}
	n := 0
	for _, a := range newest {
		changed, err := g.Adopt(a)
		if err != nil {
			return n, fmt.Errorf("adopt %s's routes (revision %d): %w", a.Model, a.Revision, err)
		}
		if changed {
			n++
		}
	}
	return n, nil
}

// forwardFeedback passes feedback this replica cannot join to its peers, and
// answers with the first that joins it. It reports whether one did.
func (g *Gateway) forwardFeedback(w http.ResponseWriter, r *http.Request, f Feedback) bool {
	if g.peers == nil || r.Header.Get(forwardedFeedback) != "" {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*peerTimeout)
	defer cancel()
	peers, err := g.peers(ctx)
	if err != nil {
		g.log.Warn("peers not resolved for feedback", "error", err)
		return false
	}
	body, err := json.Marshal(f)
	if err != nil {
		return false
	}
	hc := &http.Client{Timeout: peerTimeout}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	for _, base := range peers {
		if local != nil && pointsAt(base, local) {
			continue // this replica, which has looked already
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/feedback", bytes.NewReader(body))
		if err != nil {
			continue
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(forwardedFeedback, "1")
		// The feedback credential, when one is required, is the caller's to give.
		if auth := r.Header.Get("Authorization"); auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		answer, err := io.ReadAll(io.LimitReader(resp.Body, maxFeedbackBody))
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			continue
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(answer)
		return true
	}
	return false
}
