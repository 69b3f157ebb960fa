// Package kubernetes holds mlrelease's Kubernetes manifests (kustomize); this test
// checks them against a real API server.
package kubernetes_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/mlrelease/mlrelease/internal/stack/kubeapi"
)

// The manifests pass a server-side dry-run apply with strict field validation (a
// misspelt field is an error, not ignored), and the worker's RBAC grants what the
// deployers need and nothing more, as the API server's own authorizer answers.
func TestManifests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := kubeapi.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dc, err := dynamic.NewForConfig(srv.Config(kubeapi.Admin))
	if err != nil {
		t.Fatal(err)
	}

	disc, err := discovery.NewDiscoveryClientForConfig(srv.Config(kubeapi.Admin))
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))

	var kust struct{ Resources []string }
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.yaml")
	if len(kust.Resources) != len(files)-1 {
		t.Fatalf("kustomization.yaml lists %v, the folder has %v", kust.Resources, files)
	}
	apply := func(u *unstructured.Unstructured, dryRun bool) error {
		gvk := u.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return err
		}
		m := mapping.Resource
		opts := metav1.ApplyOptions{FieldManager: "manifest-test", Force: true}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		var r dynamic.ResourceInterface = dc.Resource(m)
		if u.GetNamespace() != "" {
			r = dc.Resource(m).Namespace(u.GetNamespace())
		}
		// Apply validates strictly: an unknown or duplicate field is an error.
		_, err = r.Apply(ctx, u.GetName(), u, opts)
		return err
	}
	var all []*unstructured.Unstructured
	for _, f := range kust.Resources {
		objs, err := kubeapi.ReadObjects(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) == 0 {
			t.Fatalf("%s has no objects", f)
		}
		all = append(all, objs...)
	}
	// Namespaces for real (dry-run objects need theirs to exist), the rest dry-run.
	for _, u := range all {
		if u.GetKind() == "Namespace" {
			if err := apply(u, false); err != nil {
				t.Fatalf("namespace %s: %v", u.GetName(), err)
			}
		}
	}
	for _, u := range all {
		if err := apply(u, true); err != nil {
			t.Errorf("dry-run apply %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}

	// The RBAC for real, then ask the authorizer about the worker's service account.
	for _, u := range all {
		if u.GroupVersionKind().Group == "rbac.authorization.k8s.io" || u.GetKind() == "ServiceAccount" {
			if err := apply(u, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	const worker = "system:serviceaccount:mlrelease:mlrelease-worker"
	for _, c := range []struct {
		verb, group, resource, namespace string
		allowed                          bool
	}{
		{"get", "gateway.networking.k8s.io", "httproutes", "models", true},
		{"patch", "gateway.networking.k8s.io", "httproutes", "models", true},
		{"patch", "serving.kserve.io", "inferenceservices", "models", true},
		{"create", "gateway.networking.k8s.io", "httproutes", "models", false},
		{"delete", "serving.kserve.io", "inferenceservices", "models", false},
		{"patch", "gateway.networking.k8s.io", "httproutes", "default", false},
		{"get", "", "secrets", "models", false},
		{"get", "", "secrets", "mlrelease", false},
		{"patch", "apps", "deployments", "models", false},
	} {
		if got := allowed(ctx, t, dc, worker, c.verb, c.group, c.resource, c.namespace); got != c.allowed {
			t.Errorf("worker may %s %s.%s in %s: %v, want %v", c.verb, c.resource, c.group, c.namespace, got, c.allowed)
		}
	}
}

// allowed asks the API server's authorizer (a SubjectAccessReview) whether user may.
func allowed(ctx context.Context, t *testing.T, dc dynamic.Interface, user, verb, group, resource, namespace string) bool {
	t.Helper()
	review := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
		"spec": map[string]any{"user": user, "groups": []any{"system:serviceaccounts", "system:serviceaccounts:mlrelease", "system:authenticated"},
			"resourceAttributes": map[string]any{"verb": verb, "group": group, "resource": resource, "namespace": namespace}},
	}}
	out, err := dc.Resource(schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1", Resource: "subjectaccessreviews"}).
		Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ok, _, _ := unstructured.NestedBool(out.Object, "status", "allowed")
	return ok
}
