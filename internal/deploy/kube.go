package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// FieldManager is the server-side apply field manager of every change mlrelease makes
// to a Kubernetes object: `kubectl get -o yaml --show-managed-fields` shows which
// fields are ours.
const FieldManager = "mlrelease"

// Annotations mlrelease keeps on the objects it drives.
const (
	// AnnotationOriginal holds what the release found before its first change (the
	// HTTPRoute rule, the InferenceService's model), restored by a rollback.
	AnnotationOriginal = "mlrelease.io/original"
	// AnnotationTraffic holds the Traffic last applied, for Current.
	AnnotationTraffic = "mlrelease.io/traffic"
)

// ErrConflict means the object changed between our read and our write, or another
// field manager holds a field we set. Retrying reads it again.
var ErrConflict = errors.New("conflict")

// NewKubeClient returns a Kubernetes client from a kubeconfig file, or from the pod's
// service account when kubeconfig is empty.
func NewKubeClient(kubeconfig string) (dynamic.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client (MLRELEASE_KUBECONFIG=%q): %w", kubeconfig, err)
	}
	cfg.UserAgent = "mlrelease"
	return dynamic.NewForConfig(cfg)
}

// object is one Kubernetes object a deployer drives.
type object struct {
	client   dynamic.Interface
	resource schema.GroupVersionResource
	kind     string
	target   Target
}

func (o object) api() dynamic.ResourceInterface {
	return o.client.Resource(o.resource).Namespace(o.target.Namespace)
}

// get reads the object; a missing one is ErrNotFound (the plan names an object that
// must exist: mlrelease changes routes, it does not create them).
func (o object) get(ctx context.Context) (*unstructured.Unstructured, error) {
	u, err := o.api().Get(ctx, o.target.Name, metav1.GetOptions{})
	if err != nil {
		return nil, o.classify("read", err)
	}
	return u, nil
}

// change reads the object, lets desired compute the fields mlrelease owns from it
// (annotations and a partial spec), and server-side applies them under FieldManager
// only if the object is still at the version read: a write anyone made in between
// (the controller's status included) is a conflict, and the object is read again, a
// few times, never overwritten blind. Force takes ownership of the fields we send (the
// controller pattern); fields we do not send stay their managers'.
func (o object) change(ctx context.Context, desired func(u *unstructured.Unstructured) (map[string]string, map[string]any, error)) (*unstructured.Unstructured, error) {
	var out *unstructured.Unstructured
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		u, err := o.get(ctx)
		if err != nil {
			return err
		}
		annotations, spec, err := desired(u)
		if err != nil {
			return err
		}
		meta := map[string]any{"name": o.target.Name, "namespace": o.target.Namespace, "resourceVersion": u.GetResourceVersion()}
		if len(annotations) > 0 {
			anns := map[string]any{}
			for k, v := range annotations {
				anns[k] = v
			}
			meta["annotations"] = anns
		}
		patch := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": o.resource.GroupVersion().String(), "kind": o.kind, "metadata": meta, "spec": spec}}
		out, err = o.api().Apply(ctx, o.target.Name, patch, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err // a conflict stays an API error, for RetryOnConflict to see
	})
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return nil, o.classify("apply", err)
	}
	return out, err
}

// waitFor polls the object until ready says its status shows the change, within the
// target's bound. The status is the data plane's word that traffic moved; a change
// not confirmed in time is an error the activity retries.
func (o object) waitFor(ctx context.Context, what string, ready func(*unstructured.Unstructured) (bool, string)) (*unstructured.Unstructured, error) {
	ctx, cancel := context.WithTimeout(ctx, o.target.wait())
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := "not read yet"
	for {
		u, err := o.get(ctx)
		if err == nil {
			ok, why := ready(u)
			if ok {
				return u, nil
			}
			last = why
		} else if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: status did not report %s within %s (last seen: %s); is its controller running?", o.target, what, o.target.wait(), last)
		case <-tick.C:
		}
	}
}

func (o object) classify(verb string, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s %s: %w: create it before the release (mlrelease changes its traffic, it does not create it)", verb, o.target, ErrNotFound)
	case apierrors.IsConflict(err):
		return fmt.Errorf("%s %s: %w: it changed while we applied, or another manager holds the field (%v); retrying reads it again", verb, o.target, ErrConflict, err)
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s %s: %w: the worker's Kubernetes identity may not (%v); grant it get and patch on this resource (kubernetes/rbac.yaml)", verb, o.target, ErrInvalid, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return fmt.Errorf("%s %s: %w: %v", verb, o.target, ErrInvalid, err)
	}
	return fmt.Errorf("%s %s: %w", verb, o.target, err)
}

// applied reads back the Traffic we last applied and the object's generation.
func applied(u *unstructured.Unstructured, model string) (Applied, error) {
	raw := u.GetAnnotations()[AnnotationTraffic]
	if raw == "" {
		return Applied{}, fmt.Errorf("%s/%s has no traffic applied by mlrelease: %w", u.GetNamespace(), u.GetName(), ErrNotFound)
	}
	var t Traffic
	if err := json.Unmarshal([]byte(raw), &t); err != nil {
		return Applied{}, fmt.Errorf("read %s of %s/%s: %w", AnnotationTraffic, u.GetNamespace(), u.GetName(), err)
	}
	if t.Model != model {
		return Applied{}, fmt.Errorf("%s/%s routes model %q, not %q: %w", u.GetNamespace(), u.GetName(), t.Model, model, ErrNotFound)
	}
	return Applied{Traffic: t, Revision: u.GetGeneration()}, nil
}

func trafficAnnotation(t Traffic) string {
	b, _ := json.Marshal(t) // plain structs: never fails
	return string(b)
}

// condition reports whether conds (a status's conditions) has type typ with status
// True at observedGeneration >= gen (gen 0: any generation).
func condition(conds []any, typ string, gen int64) bool {
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != typ || m["status"] != "True" {
			continue
		}
		if gen == 0 {
			return true
		}
		if og, ok := m["observedGeneration"].(int64); ok && og >= gen {
			return true
		}
	}
	return false
}
