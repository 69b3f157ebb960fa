package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// statusClientClosed is nginx's code for a client that left before the answer. It keeps
// client disconnects apart from 502s, which count against the variant in analysis.
const statusClientClosed = 499

type callKey struct{}

// call carries one request's routing decision into the shared ReverseProxy's hooks
// and its outcome back out.
type call struct {
	model, variant, version string
	upstream                *url.URL
	code                    int
}

func (g *Gateway) newProxy(transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			c := pr.In.Context().Value(callKey{}).(*call)
			pr.Out.URL = c.upstream
			pr.Out.Host = "" // the model server's own host, not the gateway's
			pr.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			c := resp.Request.Context().Value(callKey{}).(*call)
			c.code = resp.StatusCode
			// Set on the upstream's headers, so a model server cannot add its own values.
			resp.Header.Set(VariantHeader, c.variant)
			resp.Header.Set(VersionHeader, c.version)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			c := r.Context().Value(callKey{}).(*call)
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				c.code = statusClientClosed
				return
			}
			c.code = http.StatusBadGateway
			w.Header().Set(VariantHeader, c.variant)
			w.Header().Set(VersionHeader, c.version)
			g.log.Warn("model server unreachable", "model", c.model, "variant", c.variant, "version", c.version, "err", err)
			writeError(w, http.StatusBadGateway, fmt.Sprintf("the %s of model %q (version %q) is unreachable", c.variant, c.model, c.version))
		},
	}
}

// serveModel answers /models/{model}/{rest...} from the variant Pick chooses, and may
// mirror a champion-served request to the candidate.
func (g *Gateway) serveModel(w http.ResponseWriter, r *http.Request) {
	model := r.PathValue("model")
	rt := (*g.routes.Load())[model]
	if rt == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no routes for model %q", model))
		return
	}
	t := rt.applied.Traffic
	rest := r.PathValue("rest")

	variant, b := Pick(t, g.rand.Float64())
	// ShadowShare is checked first so that traffic without a mirror takes one draw.
	if variant == deploy.Champion && t.ShadowShare > 0 && Mirrored(t, g.rand.Float64()) {
		g.mirror(r, rt, rest)
	}

	c := &call{model: model, variant: variant, version: b.Version,
		upstream: upstreamURL(rt.targets[variant], rest, r.URL.RawQuery)}
	start := time.Now()
	// Deferred: ReverseProxy panics with http.ErrAbortHandler when the answer breaks
	// off midway, and that request still counts.
	defer func() { g.metrics.observe(model, variant, b.Version, modePrimary, c.code, time.Since(start)) }()
	g.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
}
