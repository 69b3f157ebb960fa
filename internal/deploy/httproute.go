package deploy

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/dynamic"
)

var httpRouteResource = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// HTTPRoute drives a Gateway API HTTPRoute, as Argo Rollouts' and Flagger's Gateway
// API routers do: one rule's backendRefs carry the champion's and the candidate's
// Services with weights 100-w and w, and a RequestMirror filter with its percent
// copies the shadow share to the candidate. Any Gateway API implementation (Istio,
// Envoy Gateway, NGINX Gateway Fabric, GKE) then routes it.
//
// Gateway API makes spec.rules one atomic list, so mlrelease owns it while it routes
// a model: it rewrites the rule from what it read (matches, other filters and other
// rules as it found them) under an optimistic lock, so a change anyone made since is
// a conflict and is read again, never overwritten. Every other field (hostnames,
// parentRefs, labels) stays its manager's. The rule as it was before the release is
// kept in an annotation; a rollback puts it back.
type HTTPRoute struct {
	client dynamic.Interface
	target Target
}

var _ Deployer = (*HTTPRoute)(nil)

// NewHTTPRoute returns the deployer of one HTTPRoute.
func NewHTTPRoute(client dynamic.Interface, target Target) *HTTPRoute {
	return &HTTPRoute{client: client, target: target}
}

func (h *HTTPRoute) object() object {
	return object{client: h.client, resource: httpRouteResource, kind: "HTTPRoute", target: h.target}
}

// savedRule is the part of a rule a release changes, as it was before.
type savedRule struct {
	BackendRefs []any `json:"backendRefs,omitempty"`
	Filters     []any `json:"filters,omitempty"`
}

// Apply sets the rule's backends (and mirror) to t, then waits until every parent
// Gateway has accepted the new generation.
func (h *HTTPRoute) Apply(ctx context.Context, t Traffic) (Applied, error) {
	if err := t.Validate(); err != nil {
		return Applied{}, fmt.Errorf("apply traffic for %q: %w", t.Model, err)
	}
	o := h.object()
	out, err := o.change(ctx, func(u *unstructured.Unstructured) (map[string]string, map[string]any, error) { return h.desired(u, t) })
	if err != nil {
		return Applied{}, err
	}
	gen := out.GetGeneration()
	if _, err := o.waitFor(ctx, fmt.Sprintf("generation %d accepted by every parent", gen), func(u *unstructured.Unstructured) (bool, string) {
		parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
		if len(parents) == 0 {
			return false, "no parent Gateway has reported status"
		}
		for _, p := range parents {
			m, _ := p.(map[string]any)
			conds, _, _ := unstructured.NestedSlice(m, "conditions")
			if !condition(conds, "Accepted", gen) {
				ref, _ := m["parentRef"].(map[string]any)
				return false, fmt.Sprintf("parent %v has not accepted generation %d", ref["name"], gen)
			}
		}
		return true, ""
	}); err != nil {
		return Applied{}, err
	}
	return Applied{Traffic: t, Revision: gen}, nil
}

// desired is the route's rules (and our annotations) for t, computed from the route
// as it is now.
func (h *HTTPRoute) desired(u *unstructured.Unstructured, t Traffic) (map[string]string, map[string]any, error) {
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	if h.target.Rule >= len(rules) {
		return nil, nil, fmt.Errorf("%w: deploy.rule %d: %s has %d rules", ErrInvalid, h.target.Rule, h.target, len(rules))
	}
	rule, _ := rules[h.target.Rule].(map[string]any)
	if rule == nil {
		return nil, nil, fmt.Errorf("%w: %s rule %d is not an object", ErrInvalid, h.target, h.target.Rule)
	}

	anns := map[string]string{}
	var orig *savedRule
	if raw := u.GetAnnotations()[AnnotationOriginal]; raw != "" {
		orig = &savedRule{}
		// k8s' JSON decoder keeps integers int64, as the API machinery expects.
		if err := utiljson.Unmarshal([]byte(raw), orig); err != nil {
			return nil, nil, fmt.Errorf("%w: annotation %s of %s: %v", ErrInvalid, AnnotationOriginal, h.target, err)
		}
	}
	current := savedRule{BackendRefs: slice(rule["backendRefs"]), Filters: slice(rule["filters"])}

	champ, err := serviceOf("champion url", t.Champion.URL, h.target.Namespace)
	if err != nil {
		return nil, nil, err
	}
	if t.Candidate == nil {
		switch {
		case orig != nil && hasBackend(orig.BackendRefs, champ, h.target.Namespace):
			// Rollback: the rule exactly as the release found it.
			rule["backendRefs"], rule["filters"] = orig.BackendRefs, orig.Filters
		case len(current.BackendRefs) == 1 && hasBackend(current.BackendRefs, champ, h.target.Namespace):
			// Already the champion alone: nothing to change.
		default:
			// Promotion: the new champion alone, the rule's own filters kept.
			base := current
			if orig != nil {
				base = *orig
			}
			rule["backendRefs"] = []any{backendRef(base.BackendRefs, champ, h.target.Namespace, -1)}
			rule["filters"] = base.Filters
		}
	} else {
		if orig == nil {
			orig = &current
		}
		raw, err := json.Marshal(orig)
		if err != nil {
			return nil, nil, err
		}
		anns[AnnotationOriginal] = string(raw)
		cand, err := serviceOf("candidate url", t.Candidate.URL, h.target.Namespace)
		if err != nil {
			return nil, nil, err
		}
		rule["backendRefs"] = []any{
			backendRef(orig.BackendRefs, champ, h.target.Namespace, int64(100-t.CandidateWeight)),
			backendRef(orig.BackendRefs, cand, h.target.Namespace, int64(t.CandidateWeight)),
		}
		filters := append([]any{}, orig.Filters...)
		if t.ShadowShare > 0 {
			mirror := backendRef(nil, cand, h.target.Namespace, -1)
			filters = append(filters, map[string]any{"type": "RequestMirror",
				"requestMirror": map[string]any{"backendRef": mirror, "percent": int64(t.ShadowShare)}})
		}
		rule["filters"] = filters
	}
	for _, k := range []string{"backendRefs", "filters"} {
		if s, _ := rule[k].([]any); len(s) == 0 {
			delete(rule, k)
		}
	}
	rules[h.target.Rule] = rule
	anns[AnnotationTraffic] = trafficAnnotation(t)

	return anns, map[string]any{"rules": rules}, nil
}

// Current returns the traffic mlrelease last applied to the route.
func (h *HTTPRoute) Current(ctx context.Context, model string) (Applied, error) {
	u, err := h.object().get(ctx)
	if err != nil {
		return Applied{}, err
	}
	return applied(u, model)
}

// backendRef is a backendRef to svc, shaped like the rule's first one (group, kind
// and any other fields it had), with weight w (none when w < 0).
func backendRef(like []any, svc serviceRef, namespace string, w int64) map[string]any {
	ref := map[string]any{}
	if len(like) > 0 {
		if m, ok := like[0].(map[string]any); ok {
			ref = runtime.DeepCopyJSON(m)
		}
	}
	delete(ref, "namespace")
	delete(ref, "weight")
	delete(ref, "filters")
	ref["name"], ref["port"] = svc.Name, svc.Port
	if svc.Namespace != namespace {
		ref["namespace"] = svc.Namespace
	}
	if w >= 0 {
		ref["weight"] = w
	}
	return ref
}

// hasBackend reports whether refs route to svc.
func hasBackend(refs []any, svc serviceRef, namespace string) bool {
	for _, r := range refs {
		m, _ := r.(map[string]any)
		ns, _ := m["namespace"].(string)
		if ns == "" {
			ns = namespace
		}
		port, _ := m["port"].(int64)
		if m["name"] == svc.Name && ns == svc.Namespace && port == svc.Port {
			return true
		}
	}
	return false
}

func slice(v any) []any {
	s, _ := v.([]any)
	return s
}
