package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrUnauthorized means the gateway refused the admin token; retrying with the same
// token cannot help.
var ErrUnauthorized = errors.New("gateway refused the admin token (check MLRELEASE_GATEWAY_ADMIN_TOKEN)")

// Gateway is a Deployer that drives mlrelease's own gateway through its admin API.
type Gateway struct {
	baseURL string
	token   string
	hc      *http.Client
}

var _ Deployer = (*Gateway)(nil)

// NewGateway returns a Deployer for the gateway at baseURL (such as
// "http://127.0.0.1:8080"). token is the admin bearer token, empty when the gateway
// has none; hc nil means a client with a 10s timeout.
func NewGateway(baseURL, token string, hc *http.Client) *Gateway {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Gateway{baseURL: strings.TrimSuffix(baseURL, "/"), token: token, hc: hc}
}

// Apply sets the model's routes to t; the gateway keeps the revision when nothing changed.
func (g *Gateway) Apply(ctx context.Context, t Traffic) (Applied, error) {
	// Checked here too, so a malformed plan fails without a round trip.
	if err := t.Validate(); err != nil {
		return Applied{}, fmt.Errorf("apply traffic for %q: %w", t.Model, err)
	}
	t.Target = nil // the gateway is the target; its API takes the routes alone
	body, err := json.Marshal(t)
	if err != nil {
		return Applied{}, fmt.Errorf("apply traffic for %q: %w", t.Model, err)
	}
	a, err := g.do(ctx, http.MethodPut, t.Model, body)
	if err != nil {
		return Applied{}, fmt.Errorf("apply traffic for %q: %w", t.Model, err)
	}
	return a, nil
}

// Current returns the routes the gateway holds for model, or ErrNotFound.
func (g *Gateway) Current(ctx context.Context, model string) (Applied, error) {
	a, err := g.do(ctx, http.MethodGet, model, nil)
	if err != nil {
		return Applied{}, fmt.Errorf("current traffic for %q: %w", model, err)
	}
	return a, nil
}

func (g *Gateway) do(ctx context.Context, method, model string, body []byte) (Applied, error) {
	u := g.baseURL + "/admin/v1/models/" + url.PathEscape(model)
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return Applied{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if g.token != "" {
		req.Header.Set("Authorization", "Bearer "+g.token)
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return Applied{}, fmt.Errorf("reach gateway: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Applied{}, fmt.Errorf("read gateway answer: %w", err)
	}

	switch {
	case resp.StatusCode == http.StatusOK:
		var a Applied
		if err := json.Unmarshal(raw, &a); err != nil {
			return Applied{}, fmt.Errorf("decode gateway answer: %w", err)
		}
		return a, nil
	case resp.StatusCode == http.StatusBadRequest:
		// The gateway's message already starts with ErrInvalid's text.
		msg := strings.TrimPrefix(gatewayMessage(raw), ErrInvalid.Error()+": ")
		return Applied{}, fmt.Errorf("%w: %s", ErrInvalid, msg)
	case resp.StatusCode == http.StatusUnauthorized:
		return Applied{}, ErrUnauthorized
	case resp.StatusCode == http.StatusNotFound && method == http.MethodGet:
		return Applied{}, ErrNotFound
	default:
		return Applied{}, fmt.Errorf("gateway answered %s: %s", resp.Status, gatewayMessage(raw))
	}
}

// gatewayMessage is the "error" of a JSON error body, or the start of any other body
// (a proxy in between may answer in HTML).
func gatewayMessage(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
