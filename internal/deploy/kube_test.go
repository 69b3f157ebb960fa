package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/stack/kubeapi"
)

var (
	httpRoutes        = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	inferenceServices = schema.GroupVersionResource{Group: "serving.kserve.io", Version: "v1beta1", Resource: "inferenceservices"}
	namespaces        = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

var (
	apiOnce   sync.Once
	apiServer *kubeapi.Server
	apiErr    error
	apiDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if apiServer != nil {
		apiServer.Stop()
	}
	if apiDir != "" {
		os.RemoveAll(apiDir)
	}
	os.Exit(code)
}

// kube returns the package's API server (started once, with the Gateway API and
// KServe CRDs installed) and an admin client.
func kube(t *testing.T) (*kubeapi.Server, dynamic.Interface) {
	t.Helper()
	apiOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if apiDir, apiErr = os.MkdirTemp("", "kubeapi-"); apiErr != nil {
			return
		}
		if apiServer, apiErr = kubeapi.Start(ctx, apiDir); apiErr != nil {
			return
		}
		apiErr = apiServer.InstallDataPlaneCRDs(ctx)
	})
	if apiErr != nil {
		t.Fatalf("Kubernetes API server: %v", apiErr)
	}
	dc, err := dynamic.NewForConfig(apiServer.Config(kubeapi.Admin))
	if err != nil {
		t.Fatal(err)
	}
	return apiServer, dc
}

func namespace(t *testing.T, dc dynamic.Interface, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
	if _, err := dc.Resource(namespaces).Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// applyAs server-side applies obj as another field manager (the platform team).
func applyAs(t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, manager string, obj map[string]any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	if _, err := dc.Resource(gvr).Namespace(u.GetNamespace()).Apply(context.Background(), u.GetName(), u, metav1.ApplyOptions{FieldManager: manager}); err != nil {
		t.Fatal(err)
	}
}

// controller stands in for the data plane's controller, which no test server runs:
// whenever the object's generation moves, it writes the status the controller would
// (status(u) computes it), as the Gateway API implementation or KServe does.
func controller(t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, ns, name string, status func(u *unstructured.Unstructured) map[string]any) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		var seen int64
		for ctx.Err() == nil {
			u, err := dc.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && u.GetGeneration() != seen {
				u.Object["status"] = status(u)
				if _, err := dc.Resource(gvr).Namespace(ns).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "test-controller"}); err == nil {
					seen = u.GetGeneration()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

func get(t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := dc.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// owns reports whether manager owns the field (a managedFields path such as
// "f:spec", "f:hostnames").
func owns(u *unstructured.Unstructured, manager string, path ...string) bool {
	for _, mf := range u.GetManagedFields() {
		if mf.Manager != manager || mf.FieldsV1 == nil {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal(mf.FieldsV1.Raw, &fields); err != nil {
			continue
		}
		m := fields
		ok := true
		for _, p := range path {
			next, found := m[p].(map[string]any)
			if !found {
				ok = false
				break
			}
			m = next
		}
		if ok {
			return true
		}
	}
	return false
}

func TestHTTPRouteRelease(t *testing.T) {
	srv, dc := kube(t)
	namespace(t, dc, "routes")
	rule := map[string]any{
		"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/models/wine"}}},
		"backendRefs": []any{map[string]any{"name": "wine-v1", "port": int64(8080)}},
	}
	applyAs(t, dc, httpRoutes, "platform-team", map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "wine", "namespace": "routes", "labels": map[string]any{"team": "ml"}},
		"spec": map[string]any{
			"parentRefs": []any{map[string]any{"name": "public"}},
			"hostnames":  []any{"wine.example.com"},
			"rules":      []any{rule},
		},
	})
	// The rule as the server holds it (with its defaults: kind Service, weight 1).
	before, _, _ := unstructured.NestedSlice(get(t, dc, httpRoutes, "routes", "wine").Object, "spec", "rules")
	controller(t, dc, httpRoutes, "routes", "wine", func(u *unstructured.Unstructured) map[string]any {
		return map[string]any{"parents": []any{map[string]any{
			"parentRef":      map[string]any{"name": "public"},
			"controllerName": "example.com/test-controller",
			"conditions": []any{map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "written by the test",
				"observedGeneration": u.GetGeneration(), "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
		}}}
	})

	// The worker's own way in: a kubeconfig file.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := srv.Kubeconfig(kubeconfig, kubeapi.Admin); err != nil {
		t.Fatal(err)
	}
	client, err := deploy.NewKubeClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	target := deploy.Target{Kind: deploy.KindHTTPRoute, Namespace: "routes", Name: "wine", Wait: "20s"}
	d := deploy.Targets{Kube: client}
	champion := deploy.Backend{Version: "1", URL: "http://wine-v1.routes.svc.cluster.local:8080"}
	candidate := deploy.Backend{Version: "2", URL: "http://wine-v2:8080"}
	traffic := func(w, shadow int) deploy.Traffic {
		return deploy.Traffic{Target: &target, Model: "wine", Champion: champion, Candidate: &candidate, CandidateWeight: w, ShadowShare: shadow}
	}
	ctx := context.Background()

	type ref struct {
		name   string
		weight int64
	}
	backends := func() []ref {
		u := get(t, dc, httpRoutes, "routes", "wine")
		rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
		refs, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "backendRefs")
		var out []ref
		for _, r := range refs {
			m := r.(map[string]any)
			w, _ := m["weight"].(int64)
			out = append(out, ref{m["name"].(string), w})
		}
		return out
	}
	mirror := func() int64 {
		u := get(t, dc, httpRoutes, "routes", "wine")
		rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
		filters, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "filters")
		for _, f := range filters {
			m := f.(map[string]any)
			if m["type"] == "RequestMirror" {
				p, _, _ := unstructured.NestedInt64(m, "requestMirror", "percent")
				name, _, _ := unstructured.NestedString(m, "requestMirror", "backendRef", "name")
				if name != "wine-v2" {
					t.Fatalf("mirror to %q, want wine-v2", name)
				}
				return p
			}
		}
		return 0
	}

	// Deploy at 0%, shadow, then the canary steps.
	a0, err := d.Apply(ctx, traffic(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got := backends(); len(got) != 2 || got[0] != (ref{"wine-v1", 100}) || got[1] != (ref{"wine-v2", 0}) {
		t.Fatalf("at 0%%: backends %v", got)
	}
	again, err := d.Apply(ctx, traffic(0, 0))
	if err != nil || again.Revision != a0.Revision {
		t.Fatalf("the same traffic twice: revision %d then %d (%v)", a0.Revision, again.Revision, err)
	}
	if _, err := d.Apply(ctx, traffic(0, 20)); err != nil {
		t.Fatal(err)
	}
	if p := mirror(); p != 20 {
		t.Fatalf("shadow 20%%: mirror percent %d", p)
	}
	for _, w := range []int{10, 50} {
		a, err := d.Apply(ctx, traffic(w, 0))
		if err != nil {
			t.Fatal(err)
		}
		if got := backends(); got[0].weight != int64(100-w) || got[1].weight != int64(w) {
			t.Fatalf("at %d%%: backends %v", w, got)
		}
		if p := mirror(); p != 0 {
			t.Fatalf("at %d%% after shadow: mirror still at %d%%", w, p)
		}
		cur, err := deploy.NewHTTPRoute(client, target).Current(ctx, "wine")
		if err != nil || cur.CandidateWeight != w || cur.Revision != a.Revision {
			t.Fatalf("current at %d%%: %+v, %v", w, cur, err)
		}
	}

	// Rollback from 50%: the rule exactly as the release found it.
	if _, err := d.Apply(ctx, deploy.Traffic{Target: &target, Model: "wine", Champion: champion}); err != nil {
		t.Fatal(err)
	}
	u := get(t, dc, httpRoutes, "routes", "wine")
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	if got := rules[0]; !equalJSON(got, before[0]) {
		t.Fatalf("after rollback the rule is %v, want %v", got, before[0])
	}
	if _, ok := u.GetAnnotations()[deploy.AnnotationOriginal]; ok {
		t.Fatal("the original rule's annotation is still there after the rollback")
	}
	// Fields owned by another manager survive.
	hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hostnames")
	if len(hosts) != 1 || hosts[0] != "wine.example.com" || u.GetLabels()["team"] != "ml" ||
		!owns(u, "platform-team", "f:spec", "f:hostnames") || !owns(u, "platform-team", "f:metadata", "f:labels") {
		t.Fatalf("platform-team's fields after the rollback: hostnames %v, labels %v, managed %v", hosts, u.GetLabels(), u.GetManagedFields())
	}
	if !owns(u, deploy.FieldManager, "f:spec", "f:rules") {
		t.Fatal("mlrelease does not own spec.rules")
	}

	// A second release, promoted: the candidate alone, then the same again (idempotent).
	for _, w := range []int{0, 50, 100} {
		if _, err := d.Apply(ctx, traffic(w, 0)); err != nil {
			t.Fatal(err)
		}
	}
	final := deploy.Traffic{Target: &target, Model: "wine", Champion: candidate}
	p1, err := d.Apply(ctx, final)
	if err != nil {
		t.Fatal(err)
	}
	if got := backends(); len(got) != 1 || got[0].name != "wine-v2" {
		t.Fatalf("after promotion: backends %v", got)
	}
	p2, err := d.Apply(ctx, final)
	if err != nil || p2.Revision != p1.Revision {
		t.Fatalf("promotion applied twice: revision %d then %d (%v)", p1.Revision, p2.Revision, err)
	}
	u = get(t, dc, httpRoutes, "routes", "wine")
	if hosts, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "hostnames"); len(hosts) != 1 || !owns(u, "platform-team", "f:spec", "f:hostnames") {
		t.Fatalf("platform-team's hostnames after the promotion: %v", hosts)
	}
}

func TestHTTPRouteWaitsForItsController(t *testing.T) {
	srv, dc := kube(t)
	namespace(t, dc, "nocontroller")
	applyAs(t, dc, httpRoutes, "platform-team", map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "wine", "namespace": "nocontroller"},
		"spec": map[string]any{"parentRefs": []any{map[string]any{"name": "public"}},
			"rules": []any{map[string]any{"backendRefs": []any{map[string]any{"name": "wine-v1", "port": int64(8080)}}}}},
	})
	client, err := dynamic.NewForConfig(srv.Config(kubeapi.Admin))
	if err != nil {
		t.Fatal(err)
	}
	target := deploy.Target{Kind: deploy.KindHTTPRoute, Namespace: "nocontroller", Name: "wine", Wait: "1s"}
	_, err = deploy.NewHTTPRoute(client, target).Apply(context.Background(), deploy.Traffic{Target: &target, Model: "wine",
		Champion: deploy.Backend{Version: "1", URL: "http://wine-v1:8080"}, Candidate: &deploy.Backend{Version: "2", URL: "http://wine-v2:8080"}, CandidateWeight: 10})
	if err == nil || errors.Is(err, deploy.ErrInvalid) {
		t.Fatalf("no controller: %v, want a retryable error naming the wait", err)
	}
	t.Log(err)

	// An identity without the rights is refused, not retried: the error says what to grant.
	deployer, err := dynamic.NewForConfig(srv.Config(kubeapi.Deployer))
	if err != nil {
		t.Fatal(err)
	}
	_, err = deploy.NewHTTPRoute(deployer, target).Apply(context.Background(), deploy.Traffic{Model: "wine", Champion: deploy.Backend{Version: "1", URL: "http://wine-v1:8080"}})
	if !errors.Is(err, deploy.ErrInvalid) || !strings.Contains(err.Error(), "grant it") {
		t.Fatalf("without rights: %v, want invalid naming the grant", err)
	}

	// A route that does not exist, and a rule it does not have, are not retried.
	for _, tg := range []deploy.Target{
		{Kind: deploy.KindHTTPRoute, Namespace: "nocontroller", Name: "nosuchroute"},
		{Kind: deploy.KindHTTPRoute, Namespace: "nocontroller", Name: "wine", Rule: 3},
	} {
		_, err := deploy.NewHTTPRoute(client, tg).Apply(context.Background(), deploy.Traffic{Model: "wine", Champion: deploy.Backend{Version: "1", URL: "http://wine-v1:8080"}})
		if !errors.Is(err, deploy.ErrNotFound) && !errors.Is(err, deploy.ErrInvalid) {
			t.Fatalf("%s: %v, want not found or invalid", tg, err)
		}
	}
}

func TestInferenceServiceRelease(t *testing.T) {
	srv, dc := kube(t)
	namespace(t, dc, "kserve")
	applyAs(t, dc, inferenceServices, "platform-team", map[string]any{
		"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
		"metadata": map[string]any{"name": "wine", "namespace": "kserve"},
		"spec": map[string]any{"predictor": map[string]any{
			"minReplicas": int64(2),
			"model":       map[string]any{"modelFormat": map[string]any{"name": "sklearn"}, "storageUri": "gs://models/wine/1"},
		}},
	})
	// KServe's controller: the latest revision takes canaryTrafficPercent (100 when
	// unset), the previous one the rest.
	controller(t, dc, inferenceServices, "kserve", "wine", func(u *unstructured.Unstructured) map[string]any {
		latest := map[string]any{"latestRevision": true, "revisionName": "wine-predictor-" + time.Now().Format("150405.000"), "tag": "latest", "percent": int64(100)}
		traffic := []any{latest}
		if c, ok, _ := unstructured.NestedInt64(u.Object, "spec", "predictor", "canaryTrafficPercent"); ok {
			latest["percent"] = c
			traffic = append(traffic, map[string]any{"latestRevision": false, "revisionName": "wine-predictor-prev", "tag": "prev", "percent": 100 - c})
		}
		return map[string]any{
			"observedGeneration": u.GetGeneration(),
			"conditions":         []any{map[string]any{"type": "Ready", "status": "True", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
			"components":         map[string]any{"predictor": map[string]any{"traffic": traffic}},
		}
	})
	client, err := dynamic.NewForConfig(srv.Config(kubeapi.Admin))
	if err != nil {
		t.Fatal(err)
	}
	target := deploy.Target{Kind: deploy.KindInferenceService, Namespace: "kserve", Name: "wine", Wait: "20s"}
	d := deploy.Targets{Kube: client}
	champion := deploy.Backend{Version: "1", URL: "gs://models/wine/1"}
	candidate := deploy.Backend{Version: "2", URL: "gs://models/wine/2"}
	ctx := context.Background()
	predictor := func() (string, int64, bool) {
		u := get(t, dc, inferenceServices, "kserve", "wine")
		uri, _, _ := unstructured.NestedString(u.Object, "spec", "predictor", "model", "storageUri")
		c, ok, _ := unstructured.NestedInt64(u.Object, "spec", "predictor", "canaryTrafficPercent")
		return uri, c, ok
	}

	_, err = d.Apply(ctx, deploy.Traffic{Target: &target, Model: "wine", Champion: champion, Candidate: &candidate, ShadowShare: 10})
	if !errors.Is(err, deploy.ErrInvalid) {
		t.Fatalf("shadow on KServe: %v, want invalid", err)
	}
	for _, w := range []int{0, 10, 50} {
		if _, err := d.Apply(ctx, deploy.Traffic{Target: &target, Model: "wine", Champion: champion, Candidate: &candidate, CandidateWeight: w}); err != nil {
			t.Fatal(err)
		}
		if uri, c, ok := predictor(); uri != candidate.URL || !ok || c != int64(w) {
			t.Fatalf("at %d%%: storageUri %s canaryTrafficPercent %d (set %v)", w, uri, c, ok)
		}
	}
	// Rollback: the predictor as it was.
	if _, err := d.Apply(ctx, deploy.Traffic{Target: &target, Model: "wine", Champion: champion}); err != nil {
		t.Fatal(err)
	}
	if uri, _, ok := predictor(); uri != champion.URL || ok {
		t.Fatalf("after rollback: storageUri %s, canaryTrafficPercent set %v", uri, ok)
	}
	u := get(t, dc, inferenceServices, "kserve", "wine")
	if r, _, _ := unstructured.NestedInt64(u.Object, "spec", "predictor", "minReplicas"); r != 2 || !owns(u, "platform-team", "f:spec", "f:predictor", "f:minReplicas") ||
		!owns(u, "platform-team", "f:spec", "f:predictor", "f:model", "f:modelFormat") {
		t.Fatalf("platform-team's fields after the rollback: minReplicas %d, managed %v", r, u.GetManagedFields())
	}

	// A second release, promoted.
	for _, w := range []int{0, 50, 100} {
		if _, err := d.Apply(ctx, deploy.Traffic{Target: &target, Model: "wine", Champion: champion, Candidate: &candidate, CandidateWeight: w}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Apply(ctx, deploy.Traffic{Target: &target, Model: "wine", Champion: candidate}); err != nil {
		t.Fatal(err)
	}
	if uri, _, ok := predictor(); uri != candidate.URL || ok {
		t.Fatalf("after promotion: storageUri %s, canaryTrafficPercent set %v", uri, ok)
	}
	u = get(t, dc, inferenceServices, "kserve", "wine")
	if f, _, _ := unstructured.NestedString(u.Object, "spec", "predictor", "model", "modelFormat", "name"); f != "sklearn" {
		t.Fatalf("modelFormat after promotion: %q", f)
	}
}

// equalJSON compares two values as JSON documents.
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
