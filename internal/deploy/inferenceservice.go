package deploy

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/dynamic"
)

var inferenceServiceResource = schema.GroupVersionResource{Group: "serving.kserve.io", Version: "v1beta1", Resource: "inferenceservices"}

// InferenceService drives a KServe InferenceService's canary rollout: the predictor's
// model (spec.predictor.model.storageUri) becomes the candidate's artifact and
// spec.predictor.canaryTrafficPercent its share, while KServe keeps serving the
// previous revision (the champion) the rest. A version's registry endpoint is its
// storage URI here (gs://, s3://, pvc://...). KServe has no traffic mirror: a plan
// with a shadow soak cannot target it.
//
// Only those two fields are mlrelease's (server-side apply); the predictor's model
// format, runtime, resources and everything else stay their managers'. What the
// release found is kept in an annotation; a rollback puts it back.
type InferenceService struct {
	client dynamic.Interface
	target Target
}

var _ Deployer = (*InferenceService)(nil)

// NewInferenceService returns the deployer of one InferenceService.
func NewInferenceService(client dynamic.Interface, target Target) *InferenceService {
	return &InferenceService{client: client, target: target}
}

func (s *InferenceService) object() object {
	return object{client: s.client, resource: inferenceServiceResource, kind: "InferenceService", target: s.target}
}

// savedPredictor is what a release changes in the predictor, as it was before.
type savedPredictor struct {
	StorageURI string `json:"storageUri"`
	// Canary is the canaryTrafficPercent it had, nil when unset.
	Canary *int64 `json:"canaryTrafficPercent,omitempty"`
}

// Apply sets the predictor's model and canary share to t, then waits until KServe's
// status reports the share on the latest revision, ready.
func (s *InferenceService) Apply(ctx context.Context, t Traffic) (Applied, error) {
	if err := t.Validate(); err != nil {
		return Applied{}, fmt.Errorf("apply traffic for %q: %w", t.Model, err)
	}
	if t.ShadowShare > 0 {
		return Applied{}, fmt.Errorf("%w: shadowShare %d: a KServe InferenceService (%s) cannot mirror traffic; set shadow.share to 0 or route through an HTTPRoute", ErrInvalid, t.ShadowShare, s.target)
	}
	o := s.object()
	var want int64 // the latest revision's share once applied
	out, err := o.change(ctx, func(u *unstructured.Unstructured) (map[string]string, map[string]any, error) {
		anns, spec, w, err := s.desired(u, t)
		want = w
		return anns, spec, err
	})
	if err != nil {
		return Applied{}, err
	}
	gen := out.GetGeneration()
	if _, err := o.waitFor(ctx, fmt.Sprintf("generation %d ready with %d%% on the latest revision", gen, want), func(u *unstructured.Unstructured) (bool, string) {
		og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		if og < gen {
			return false, fmt.Sprintf("observedGeneration %d", og)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		if !condition(conds, "Ready", 0) {
			return false, "not Ready"
		}
		traffic, _, _ := unstructured.NestedSlice(u.Object, "status", "components", "predictor", "traffic")
		for _, tr := range traffic {
			m, _ := tr.(map[string]any)
			if latest, _ := m["latestRevision"].(bool); latest {
				p, _ := m["percent"].(int64) // omitted when 0
				if p == want {
					return true, ""
				}
				return false, fmt.Sprintf("latest revision at %d%%", p)
			}
		}
		return false, "no latest revision in status.components.predictor.traffic"
	}); err != nil {
		return Applied{}, err
	}
	return Applied{Traffic: t, Revision: gen}, nil
}

// desired is the predictor's fields (and our annotations) for t, computed from the
// InferenceService as it is now, and the latest revision's share once applied.
func (s *InferenceService) desired(u *unstructured.Unstructured, t Traffic) (map[string]string, map[string]any, int64, error) {
	uri, found, _ := unstructured.NestedString(u.Object, "spec", "predictor", "model", "storageUri")
	if !found {
		return nil, nil, 0, fmt.Errorf("%w: %s has no spec.predictor.model.storageUri: mlrelease drives the predictor's model (KServe's model spec)", ErrInvalid, s.target)
	}
	current := savedPredictor{StorageURI: uri}
	if c, ok, _ := unstructured.NestedInt64(u.Object, "spec", "predictor", "canaryTrafficPercent"); ok {
		current.Canary = &c
	}
	var orig *savedPredictor
	if raw := u.GetAnnotations()[AnnotationOriginal]; raw != "" {
		orig = &savedPredictor{}
		if err := utiljson.Unmarshal([]byte(raw), orig); err != nil {
			return nil, nil, 0, fmt.Errorf("%w: annotation %s of %s: %v", ErrInvalid, AnnotationOriginal, s.target, err)
		}
	}

	anns := map[string]string{AnnotationTraffic: trafficAnnotation(t)}
	predictor := map[string]any{}
	want := int64(100) // the latest revision's share once applied
	switch {
	case t.Candidate != nil:
		if orig == nil {
			orig = &current
		}
		raw, err := json.Marshal(orig)
		if err != nil {
			return nil, nil, 0, err
		}
		anns[AnnotationOriginal] = string(raw)
		want = int64(t.CandidateWeight)
		predictor["model"] = map[string]any{"storageUri": t.Candidate.URL}
		predictor["canaryTrafficPercent"] = want
	case orig != nil && orig.StorageURI == t.Champion.URL:
		// Rollback: the predictor as the release found it.
		predictor["model"] = map[string]any{"storageUri": orig.StorageURI}
		if orig.Canary != nil {
			predictor["canaryTrafficPercent"] = *orig.Canary
			want = *orig.Canary
		}
	default:
		// Promotion, or the champion already alone: its model, all traffic.
		predictor["model"] = map[string]any{"storageUri": t.Champion.URL}
	}

	return anns, map[string]any{"predictor": predictor}, want, nil
}

// Current returns the traffic mlrelease last applied to the InferenceService.
func (s *InferenceService) Current(ctx context.Context, model string) (Applied, error) {
	u, err := s.object().get(ctx)
	if err != nil {
		return Applied{}, err
	}
	return applied(u, model)
}
