package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ErrUnauthorized means the gateway refused the admin token; retrying with the same
// token cannot help.
var ErrUnauthorized = errors.New("gateway refused the admin token (check MLRELEASE_GATEWAY_ADMIN_TOKEN)")

// Gateway is a Deployer that drives mlrelease's own gateway through its admin API:
// one gateway, or every replica of one. A change succeeds only when each replica has
// applied it; a replica that is down makes it fail, retryably, so the activity tries
// again until every replica serves the same routes.
type Gateway struct {
	replicas []string // base URLs; a dns+ one stands for each address of its host
	token    string
	hc       *http.Client
	resolver *net.Resolver
}

var _ Deployer = (*Gateway)(nil)

// NewGateway returns a Deployer for the gateway at baseURL (such as
// "http://127.0.0.1:8080"). baseURL may list replicas separated by commas, or name
// them all through DNS with a dns+ prefix ("dns+http://gateway-replicas:8080": each
// address the name resolves to, at every change, as a Kubernetes headless Service
// lists its pods). token is the admin bearer token, empty when the gateway has none;
// hc nil means a client with a 10s timeout.
func NewGateway(baseURL, token string, hc *http.Client) *Gateway {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	g := &Gateway{token: token, hc: hc, resolver: net.DefaultResolver}
	for _, u := range strings.Split(baseURL, ",") {
		if u = strings.TrimSuffix(strings.TrimSpace(u), "/"); u != "" {
			g.replicas = append(g.replicas, u)
		}
	}
	return g
}

// Apply sets the model's routes to t on every replica; each keeps its revision when
// nothing changed. The revision returned is the first replica's.
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
	out, err := g.each(ctx, func(base string) (Applied, error) { return g.do(ctx, base, http.MethodPut, t.Model, body) })
	if err != nil {
		return Applied{}, fmt.Errorf("apply traffic for %q: %w", t.Model, err)
	}
	return out[0], nil
}

// Current returns the routes the gateway holds for model, or ErrNotFound. Replicas
// that disagree are an error that names them.
func (g *Gateway) Current(ctx context.Context, model string) (Applied, error) {
	out, err := g.each(ctx, func(base string) (Applied, error) { return g.do(ctx, base, http.MethodGet, model, nil) })
	if err != nil {
		return Applied{}, fmt.Errorf("current traffic for %q: %w", model, err)
	}
	for _, a := range out[1:] {
		if !sameTraffic(a.Traffic, out[0].Traffic) {
			return Applied{}, fmt.Errorf("current traffic for %q: the gateway's replicas disagree (%+v and %+v): the next change brings them together", model, out[0].Traffic, a.Traffic)
		}
	}
	return out[0], nil
}

// each calls fn on every replica and returns their answers in order. Every replica
// is tried; the error names each that failed, and is ErrInvalid, ErrUnauthorized or
// ErrNotFound only when every failure is.
func (g *Gateway) each(ctx context.Context, fn func(base string) (Applied, error)) ([]Applied, error) {
	bases, err := g.resolve(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Applied, 0, len(bases))
	var errs []error
	for _, base := range bases {
		a, err := fn(base)
		if err != nil {
			if len(bases) > 1 {
				err = fmt.Errorf("replica %s: %w", base, err)
			}
			errs = append(errs, err)
			continue
		}
		out = append(out, a)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	if len(errs) > 0 {
		for _, kind := range []error{ErrInvalid, ErrUnauthorized, ErrNotFound} {
			all := true
			for _, e := range errs {
				all = all && errors.Is(e, kind)
			}
			if all {
				return nil, fmt.Errorf("%w: %w", kind, errors.Join(errs...))
			}
		}
		// Retryable: a replica that is down or restarting gets the change next time.
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// Replicas lists the gateway's replicas' base URLs, each address of a dns+ name as
// its own, as they resolve now.
func (g *Gateway) Replicas(ctx context.Context) ([]string, error) { return g.resolve(ctx) }

// resolve lists the replicas' base URLs, each address of a dns+ name as its own.
func (g *Gateway) resolve(ctx context.Context) ([]string, error) {
	var out []string
	for _, base := range g.replicas {
		rest, ok := strings.CutPrefix(base, "dns+")
		if !ok {
			out = append(out, base)
			continue
		}
		u, err := url.Parse(rest)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%w: gateway URL %q: %v", ErrInvalid, base, err)
		}
		addrs, err := g.resolver.LookupHost(ctx, u.Hostname())
		if err != nil {
			return nil, fmt.Errorf("resolve the gateway's replicas %s: %w", u.Hostname(), err)
		}
		slices.Sort(addrs)
		for _, a := range addrs {
			r := *u
			r.Host = net.JoinHostPort(a, u.Port())
			if u.Port() == "" {
				r.Host = a
				if strings.Contains(a, ":") {
					r.Host = "[" + a + "]"
				}
			}
			out = append(out, r.String())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no gateway URL (MLRELEASE_GATEWAY_URL)", ErrInvalid)
	}
	return out, nil
}

// sameTraffic compares two routings, whatever pointers they hold.
func sameTraffic(a, b Traffic) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func (g *Gateway) do(ctx context.Context, base, method, model string, body []byte) (Applied, error) {
	u := base + "/admin/v1/models/" + url.PathEscape(model)
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
