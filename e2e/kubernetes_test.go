package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/stack/kubeapi"
	"github.com/mlrelease/mlrelease/workflows"
	"github.com/mlrelease/mlrelease/workflows/roundtest"
)

// liveCandidate matches a route state in which the candidate serves live requests.
var liveCandidate = regexp.MustCompile(`wine-v2=[1-9]`)

var (
	httpRoutes        = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	inferenceServices = schema.GroupVersionResource{Group: "serving.kserve.io", Version: "v1beta1", Resource: "inferenceservices"}
)

// Whole releases whose data plane is a Gateway API HTTPRoute or a KServe
// InferenceService on a real API server: the workflow (test suite, time skipped)
// runs the real activities with the real Kubernetes deployers and a real SQLite
// registry. What is not real here: no controller runs, so the test writes each
// object's status as its controller would; and no mesh serves traffic, so the
// metrics come from counters the test advances (a good candidate, or one whose
// requests half fail).
func TestKubernetesRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := kubeapi.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if err := srv.InstallDataPlaneCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	kc, err := dynamic.NewForConfig(srv.Config(kubeapi.Admin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx,
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "models"}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		kind string
		// fails says when the candidate fails half its requests: never, always (its
		// mirrored requests too), or once it serves live traffic.
		fails   string
		outcome string
		// want are the states the object went through, as its controller saw them.
		want []string
	}{
		{"httproute promoted", deploy.KindHTTPRoute, "never", workflows.OutcomePromoted,
			[]string{"wine-v1=100 wine-v2=0", "wine-v1=100 wine-v2=0 mirror=20", "wine-v1=90 wine-v2=10", "wine-v1=50 wine-v2=50", "wine-v1=0 wine-v2=100", "wine-v2=1"}},
		// The shadow soak's analysis fails it before any live traffic: back to the rule
		// as it was (weight 1 is the API's default for a lone backend).
		{"httproute rolled back in shadow", deploy.KindHTTPRoute, "always", workflows.OutcomeRolledBack,
			[]string{"wine-v1=100 wine-v2=0", "wine-v1=100 wine-v2=0 mirror=20", "wine-v1=1"}},
		{"httproute rolled back in canary", deploy.KindHTTPRoute, "live", workflows.OutcomeRolledBack,
			[]string{"wine-v1=100 wine-v2=0", "wine-v1=100 wine-v2=0 mirror=20", "wine-v1=90 wine-v2=10", "wine-v1=1"}},
		{"inferenceservice promoted", deploy.KindInferenceService, "never", workflows.OutcomePromoted,
			[]string{"wine/2 wine-v2=0", "wine/2 wine-v2=10", "wine/2 wine-v2=50", "wine/2 wine-v2=100", "wine/2"}},
		{"inferenceservice rolled back in canary", deploy.KindInferenceService, "live", workflows.OutcomeRolledBack,
			[]string{"wine/2 wine-v2=0", "wine/2 wine-v2=10", "wine/1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := strings.ReplaceAll(c.name, " ", "-")
			dp := dataPlanes[c.kind]
			obj := dp.object(name)
			if _, err := kc.Resource(dp.resource).Namespace("models").Apply(ctx, name, obj, metav1.ApplyOptions{FieldManager: "platform-team"}); err != nil {
				t.Fatal(err)
			}
			seen := controller(t, kc, dp, name)

			reg, err := registry.OpenSQLite(filepath.Join(t.TempDir(), "registry.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			for i, endpoint := range dp.endpoints {
				v := registry.Version{Model: "wine", Version: fmt.Sprint(i + 1), Endpoint: endpoint}
				if i == 0 {
					v.Aliases = []string{registry.AliasChampion}
				}
				if err := reg.RegisterVersion(ctx, v); err != nil {
					t.Fatal(err)
				}
			}
			p, err := plan.Parse([]byte(fmt.Sprintf(kubePlan, c.kind, name, dp.shadow)))
			if err != nil {
				t.Fatal(err)
			}

			var suite testsuite.WorkflowTestSuite
			suite.SetLogger(tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)))
			env := suite.NewTestWorkflowEnvironment()
			env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: workflows.WorkflowID("wine"), TaskQueue: workflows.TaskQueue})
			env.RegisterWorkflowWithOptions(workflows.ReleaseWorkflow, workflow.RegisterOptions{Name: workflows.WorkflowName})
			acts := &activities.Activities{
				Registry: reg,
				Deployer: deploy.Targets{Kube: kc},
				Metrics: &counters{bad: func() bool {
					if c.fails == "live" {
						steps := seen()
						return len(steps) > 0 && liveCandidate.MatchString(steps[len(steps)-1])
					}
					return c.fails == "always"
				}},
				Notifier: notify.Log{Logger: slog.New(slog.DiscardHandler)},
			}
			env.RegisterActivity(acts)
			// The test environment's stand-in for the worker's round clock, running
			// the real analysis.
			rounds := &roundtest.Clock{Env: env, Analyze: func(in activities.AnalyzeInput) ([]analysis.Measurement, error) {
				return acts.Analyze(context.Background(), in)
			}}
			rounds.Install()
			env.ExecuteWorkflow(workflows.ReleaseWorkflow, workflows.ReleaseInput{Plan: *p, StartedBy: "ci"})
			if err := env.GetWorkflowError(); err != nil {
				t.Fatal(err)
			}
			var res workflows.Result
			if err := env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Outcome != c.outcome {
				t.Fatalf("outcome %s (%s), want %s", res.Outcome, res.Reason, c.outcome)
			}
			if steps := seen(); !equal(steps, c.want) {
				t.Fatalf("%s went through %q, want %q", c.kind, steps, c.want)
			}
			// The platform team's own field survived the release.
			got, err := kc.Resource(dp.resource).Namespace("models").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if v, _, _ := unstructured.NestedFieldNoCopy(got.Object, dp.kept...); !equalJSON(v, dp.keptValue) {
				t.Fatalf("%v after the release: %v, want %v", dp.kept, v, dp.keptValue)
			}
		})
	}
}

// dataPlane is what the test needs of one Kubernetes target kind.
type dataPlane struct {
	resource schema.GroupVersionResource
	// object is the platform team's object, before any release.
	object func(name string) *unstructured.Unstructured
	// status is what the kind's controller writes at a new generation.
	status func(u *unstructured.Unstructured) map[string]any
	// render says where the object routes traffic, for the test to compare.
	render    func(u *unstructured.Unstructured) string
	endpoints []string // versions 1 and 2 in the registry
	shadow    int      // the plan's shadow share
	// kept is a field of the platform team's that must survive, and its value.
	kept      []string
	keptValue any
}

var dataPlanes = map[string]dataPlane{
	deploy.KindHTTPRoute: {
		resource: httpRoutes,
		object: func(name string) *unstructured.Unstructured {
			return &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
				"metadata": map[string]any{"name": name, "namespace": "models"},
				"spec": map[string]any{"parentRefs": []any{map[string]any{"name": "public"}}, "hostnames": []any{"wine.example.com"},
					"rules": []any{map[string]any{"backendRefs": []any{map[string]any{"name": "wine-v1", "port": int64(8080)}}}}},
			}}
		},
		status: func(u *unstructured.Unstructured) map[string]any {
			return map[string]any{"parents": []any{map[string]any{
				"parentRef": map[string]any{"name": "public"}, "controllerName": "example.com/test-controller",
				"conditions": []any{map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "written by the test",
					"observedGeneration": u.GetGeneration(), "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
			}}}
		},
		render:    weights,
		endpoints: []string{"http://wine-v1.models.svc.cluster.local:8080", "http://wine-v2.models.svc.cluster.local:8080"},
		shadow:    20,
		kept:      []string{"spec", "hostnames"},
		keptValue: []any{"wine.example.com"},
	},
	deploy.KindInferenceService: {
		resource: inferenceServices,
		object: func(name string) *unstructured.Unstructured {
			return &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
				"metadata": map[string]any{"name": name, "namespace": "models"},
				"spec": map[string]any{"predictor": map[string]any{"minReplicas": int64(2),
					"model": map[string]any{"modelFormat": map[string]any{"name": "sklearn"}, "storageUri": "gs://models/wine/1"}}},
			}}
		},
		// KServe: the latest revision takes canaryTrafficPercent (all when unset).
		status: func(u *unstructured.Unstructured) map[string]any {
			latest := map[string]any{"latestRevision": true, "tag": "latest", "percent": int64(100)}
			traffic := []any{latest}
			if c, ok, _ := unstructured.NestedInt64(u.Object, "spec", "predictor", "canaryTrafficPercent"); ok {
				latest["percent"] = c
				traffic = append(traffic, map[string]any{"latestRevision": false, "tag": "prev", "percent": 100 - c})
			}
			return map[string]any{"observedGeneration": u.GetGeneration(),
				"conditions": []any{map[string]any{"type": "Ready", "status": "True", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
				"components": map[string]any{"predictor": map[string]any{"traffic": traffic}}}
		},
		// "wine/2 wine-v2=10": the predictor's model, and the candidate's share.
		render: func(u *unstructured.Unstructured) string {
			uri, _, _ := unstructured.NestedString(u.Object, "spec", "predictor", "model", "storageUri")
			out := strings.TrimPrefix(uri, "gs://models/")
			if c, ok, _ := unstructured.NestedInt64(u.Object, "spec", "predictor", "canaryTrafficPercent"); ok {
				out += fmt.Sprintf(" wine-v2=%d", c)
			}
			return out
		},
		endpoints: []string{"gs://models/wine/1", "gs://models/wine/2"},
		kept:      []string{"spec", "predictor", "model", "modelFormat", "name"},
		keptValue: "sklearn",
	},
}

const kubePlan = `
model: wine
candidate: "2"
deploy:
  kind: %s
  namespace: models
  name: %s
  wait: 30s
shadow:
  share: %d
  duration: 20s
canary:
  steps:
    - weight: 10
      bake: 20s
    - weight: 50
      bake: 20s
analysis:
  interval: 10s
  metrics:
    - name: error-rate
      judge: rate
      query: sum(requests_total{variant="{{.Variant}}",code=~"5.."})
      totalQuery: sum(requests_total{variant="{{.Variant}}"})
      tolerance: 0.1
      minSamples: 50
approval:
  required: false
`

// controller stands in for the data plane's controller (a Gateway API
// implementation, KServe), which no test server runs: at every new generation of the
// object it records where the object routes traffic and writes the status the
// controller would, so that the deployer's wait is answered. It returns the states
// seen so far.
func controller(t *testing.T, kc dynamic.Interface, dp dataPlane, name string) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var mu sync.Mutex
	var seen []string
	go func() {
		defer close(done)
		var gen int64 = 1 // the platform team's own
		for ctx.Err() == nil {
			u, err := kc.Resource(dp.resource).Namespace("models").Get(ctx, name, metav1.GetOptions{})
			if err == nil && u.GetGeneration() > gen {
				u.Object["status"] = dp.status(u)
				if _, err := kc.Resource(dp.resource).Namespace("models").UpdateStatus(ctx, u, metav1.UpdateOptions{}); err == nil {
					gen = u.GetGeneration()
					mu.Lock()
					seen = append(seen, dp.render(u))
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// weights renders rule 0's backends and mirror: "wine-v1=90 wine-v2=10 mirror=20".
func weights(u *unstructured.Unstructured) string {
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	rule := rules[0].(map[string]any)
	var parts []string
	refs, _, _ := unstructured.NestedSlice(rule, "backendRefs")
	for _, r := range refs {
		m := r.(map[string]any)
		w, _ := m["weight"].(int64)
		parts = append(parts, fmt.Sprintf("%s=%d", m["name"], w))
	}
	filters, _, _ := unstructured.NestedSlice(rule, "filters")
	for _, f := range filters {
		if p, ok, _ := unstructured.NestedInt64(f.(map[string]any), "requestMirror", "percent"); ok {
			parts = append(parts, fmt.Sprintf("mirror=%d", p))
		}
	}
	return strings.Join(parts, " ")
}

// equalJSON compares two values as JSON documents.
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// counters are the Prometheus counters a mesh would export, advanced at every read:
// 100 requests per read and arm; the champion fails 1%, the candidate none, or half
// of them while bad says so.
type counters struct {
	mu     sync.Mutex
	bad    func() bool
	reads  map[string]int
	errors float64
}

func (c *counters) Value(_ context.Context, query string, _ time.Time) (*float64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reads == nil {
		c.reads = map[string]int{}
	}
	c.reads[query]++
	n := c.reads[query]
	v := float64(100 * n)
	if strings.Contains(query, "code=") {
		switch {
		case strings.Contains(query, `variant="champion"`):
			v = float64(n)
		default:
			if c.bad() {
				c.errors += 50
			}
			v = c.errors
		}
	}
	return &v, nil
}

func (c *counters) Buckets(context.Context, string, time.Time) (map[string]float64, error) {
	return nil, fmt.Errorf("no histograms here")
}
