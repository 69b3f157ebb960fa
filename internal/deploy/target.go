package deploy

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/dynamic"
)

// Target kinds: the data planes a release can drive.
const (
	// KindGateway is mlrelease's own gateway, the worker's default.
	KindGateway = "gateway"
	// KindHTTPRoute is a Gateway API HTTPRoute: backendRefs weights for the split and
	// a RequestMirror filter for shadow traffic.
	KindHTTPRoute = "httproute"
	// KindInferenceService is a KServe InferenceService: the predictor's model and its
	// canaryTrafficPercent. KServe has no mirror, so no shadow soak.
	KindInferenceService = "inferenceservice"
)

// Kinds lists the target kinds.
var Kinds = []string{KindGateway, KindHTTPRoute, KindInferenceService}

// Target is the data plane that routes a model's traffic. The zero Target is the
// worker's gateway.
type Target struct {
	// Kind is gateway (default), httproute or inferenceservice.
	Kind string `yaml:"kind" json:"kind,omitempty"`
	// Namespace and Name name the Kubernetes object.
	Namespace string `yaml:"namespace" json:"namespace,omitempty"`
	Name      string `yaml:"name" json:"name,omitempty"`
	// Rule is the index of the HTTPRoute rule whose backends the release sets (0).
	Rule int `yaml:"rule" json:"rule,omitempty"`
	// Wait bounds how long each change waits for the object's status to report it
	// (default 2m).
	Wait string `yaml:"wait" json:"wait,omitempty"`
}

// DefaultWait is how long a Kubernetes deployer waits for the status by default.
const DefaultWait = 2 * time.Minute

// IsGateway reports whether the target is mlrelease's gateway.
func (t Target) IsGateway() bool { return t.Kind == "" || t.Kind == KindGateway }

// String names the target for messages: "httproute models/wine".
func (t Target) String() string {
	if t.IsGateway() {
		return KindGateway
	}
	return t.Kind + " " + t.Namespace + "/" + t.Name
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Problems lists what is wrong with the target, each naming the field (under prefix,
// such as "deploy") and its value.
func (t Target) Problems(prefix string) []string {
	var out []string
	if t.IsGateway() {
		if t.Namespace != "" || t.Name != "" {
			out = append(out, fmt.Sprintf("%s.namespace %q and %s.name %q: only Kubernetes kinds (httproute, inferenceservice) name an object", prefix, t.Namespace, prefix, t.Name))
		}
		return out
	}
	if t.Kind != KindHTTPRoute && t.Kind != KindInferenceService {
		return append(out, fmt.Sprintf("%s.kind %q: must be one of %s", prefix, t.Kind, strings.Join(Kinds, ", ")))
	}
	if len(t.Namespace) > 63 || !dns1123.MatchString(t.Namespace) {
		out = append(out, fmt.Sprintf("%s.namespace %q: must be a Kubernetes namespace name (lower-case letters, digits, '-', at most 63)", prefix, t.Namespace))
	}
	if len(t.Name) > 253 || !dns1123.MatchString(strings.ReplaceAll(t.Name, ".", "-")) {
		out = append(out, fmt.Sprintf("%s.name %q: must be a Kubernetes object name", prefix, t.Name))
	}
	if t.Rule < 0 || t.Rule > 63 || (t.Rule != 0 && t.Kind != KindHTTPRoute) {
		out = append(out, fmt.Sprintf("%s.rule %d: must be an HTTPRoute rule index (0..63), and only for kind httproute", prefix, t.Rule))
	}
	if t.Wait != "" {
		if d, err := time.ParseDuration(t.Wait); err != nil || d <= 0 {
			out = append(out, fmt.Sprintf("%s.wait %q: must be a positive duration such as 2m", prefix, t.Wait))
		}
	}
	return out
}

func (t Target) wait() time.Duration {
	if d, err := time.ParseDuration(t.Wait); err == nil && d > 0 {
		return d
	}
	return DefaultWait
}

// Targets is the Deployer a worker uses: each traffic change goes to the data plane
// its Target names, mlrelease's gateway unless the plan says otherwise.
type Targets struct {
	// Gateway drives mlrelease's gateway.
	Gateway Deployer
	// Kube is the Kubernetes API client; nil when the worker has none configured.
	Kube dynamic.Interface
}

var _ Deployer = Targets{}

// For returns the Deployer of a target.
func (d Targets) For(t *Target) (Deployer, error) {
	if t == nil || t.IsGateway() {
		if d.Gateway == nil {
			return nil, fmt.Errorf("%w: the worker has no gateway configured (MLRELEASE_GATEWAY_URL)", ErrInvalid)
		}
		return d.Gateway, nil
	}
	if p := t.Problems("deploy"); len(p) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(p, "; "))
	}
	if d.Kube == nil {
		return nil, fmt.Errorf("%w: deploy.kind %s needs a Kubernetes API server: set MLRELEASE_KUBECONFIG or run the worker in a cluster", ErrInvalid, t.Kind)
	}
	if t.Kind == KindHTTPRoute {
		return &HTTPRoute{client: d.Kube, target: *t}, nil
	}
	return &InferenceService{client: d.Kube, target: *t}, nil
}

// Apply ensures the traffic on its target's data plane.
func (d Targets) Apply(ctx context.Context, t Traffic) (Applied, error) {
	dep, err := d.For(t.Target)
	if err != nil {
		return Applied{}, fmt.Errorf("apply traffic for %q: %w", t.Model, err)
	}
	return dep.Apply(ctx, t)
}

// Current returns the gateway's routes for model; a Kubernetes target's are read by
// its own deployer (For).
func (d Targets) Current(ctx context.Context, model string) (Applied, error) {
	dep, err := d.For(nil)
	if err != nil {
		return Applied{}, err
	}
	return dep.Current(ctx, model)
}

// serviceRef is a Kubernetes Service a model version's endpoint names.
type serviceRef struct {
	Name      string
	Namespace string
	Port      int64
}

// serviceOf reads a version's endpoint as a Kubernetes Service: the registry records
// a version served in a cluster by its Service's address,
// http://NAME[.NAMESPACE[.svc[.cluster.local]]][:PORT].
func serviceOf(field, raw, namespace string) (serviceRef, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return serviceRef{}, fmt.Errorf("%w: %s %q is not a Service address (http://NAME.NAMESPACE.svc:PORT)", ErrInvalid, field, raw)
	}
	host, port := u.Hostname(), u.Port()
	if net.ParseIP(host) != nil {
		return serviceRef{}, fmt.Errorf("%w: %s %q is an IP address: an HTTPRoute routes to Services, name one (http://NAME.NAMESPACE.svc:PORT)", ErrInvalid, field, raw)
	}
	labels := strings.Split(strings.TrimSuffix(strings.TrimSuffix(host, ".cluster.local"), ".svc"), ".")
	if len(labels) > 2 || !dns1123.MatchString(labels[0]) || len(labels[0]) > 63 {
		return serviceRef{}, fmt.Errorf("%w: %s %q is not a Service address (http://NAME.NAMESPACE.svc:PORT)", ErrInvalid, field, raw)
	}
	ref := serviceRef{Name: labels[0], Namespace: namespace, Port: 80}
	if u.Scheme == "https" {
		ref.Port = 443
	}
	if len(labels) == 2 {
		ref.Namespace = labels[1]
	}
	if port != "" {
		p, err := strconv.ParseInt(port, 10, 32)
		if err != nil || p < 1 || p > 65535 {
			return serviceRef{}, fmt.Errorf("%w: %s %q has no valid port", ErrInvalid, field, raw)
		}
		ref.Port = p
	}
	return ref, nil
}
