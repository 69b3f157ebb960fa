package plan_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/plan"
)

func TestDeployTarget(t *testing.T) {
	p, err := plan.Parse([]byte(fullPlan))
	require.NoError(t, err)
	assert.Nil(t, p.Target(), "no deploy section: the worker's gateway")

	p, err = plan.Parse([]byte(fullPlan + "deploy:\n  kind: httproute\n  namespace: models\n  name: wine\n  rule: 1\n  wait: 90s\n"))
	require.NoError(t, err)
	require.NotNil(t, p.Target())
	assert.Equal(t, deploy.Target{Kind: deploy.KindHTTPRoute, Namespace: "models", Name: "wine", Rule: 1, Wait: "90s"}, *p.Target())
}

func TestDeployTargetRejects(t *testing.T) {
	for name, c := range map[string]struct{ deploy, want string }{
		"unknown kind":        {"kind: istio\n  namespace: m\n  name: w", `deploy.kind "istio"`},
		"no namespace":        {"kind: httproute\n  name: w", `deploy.namespace ""`},
		"bad name":            {"kind: httproute\n  namespace: m\n  name: Wine_1", `deploy.name "Wine_1"`},
		"rule for kserve":     {"kind: inferenceservice\n  namespace: m\n  name: w\n  rule: 2", "deploy.rule 2"},
		"bad wait":            {"kind: httproute\n  namespace: m\n  name: w\n  wait: soon", `deploy.wait "soon"`},
		"gateway with object": {"kind: gateway\n  name: w", `deploy.name "w"`},
		// fullPlan has a 50% shadow soak, which KServe cannot mirror.
		"shadow on kserve": {"kind: inferenceservice\n  namespace: m\n  name: w", "shadow.share: 50: deploy.kind inferenceservice cannot mirror"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := plan.Parse([]byte(fullPlan + "deploy:\n  " + c.deploy + "\n"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

// The Kubernetes example plans load and validate.
func TestKubernetesExamplePlans(t *testing.T) {
	for file, kind := range map[string]string{"gateway-api.yaml": deploy.KindHTTPRoute, "kserve.yaml": deploy.KindInferenceService} {
		p, err := plan.Load("../../examples/plans/" + file)
		require.NoError(t, err, file)
		require.NotNil(t, p.Target(), file)
		assert.Equal(t, kind, p.Target().Kind, file)
	}
}
