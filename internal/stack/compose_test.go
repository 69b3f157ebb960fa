package stack

// Checks docker-compose.yml (repo root) without a Docker engine: the file is
// loaded, interpolated, normalised and validated by compose-go, the same library
// the docker compose CLI uses, and then its shape is asserted: services, pinned
// images, published ports, start-up ordering, what is built from the repo and
// what is mounted from it.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// repoRoot is the module root, found from this file's location
// (internal/stack/compose_test.go) and confirmed by its go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok, "runtime.Caller")
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "go.mod at the repo root")
	require.Contains(t, string(gomod), "module github.com/mlrelease/mlrelease")
	return root
}

// loadCompose loads docker-compose.yml as `docker compose config` would, with env
// as the only environment (no OS environment, no .env file) so that the test does
// not depend on the machine it runs on.
func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(env),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := cli.ProjectFromOptions(ctx, opts)
	require.NoError(t, err, "docker-compose.yml must load and validate")
	return p
}

// The services `docker compose up` starts.
var wantServices = []string{
	"postgresql",
	"temporal-schema",
	"temporal",
	"temporal-admin-tools",
	"temporal-ui",
	"prometheus",
	"gateway",
	"worker",
	"champion",
	"candidate",
	"loadgen",
	"register-champion",
	"register-candidate",
	"route-champion",
	"grafana",
	"demo-keys",
}

// Services built from the repo Dockerfile, and the binary each one runs.
var ourServices = map[string]string{
	"gateway":   "gateway",
	"worker":    "worker",
	"champion":  "modelserver",
	"candidate": "modelserver",
	"loadgen":   "loadgen",
	"cli":       "mlrelease",

	"register-champion":  "mlrelease",
	"register-candidate": "mlrelease",
	"route-champion":     "mlrelease",
	"demo-keys":          "mlrelease",
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	assert.Equal(t, "mlrelease", p.Name)
	assert.ElementsMatch(t, wantServices, p.ServiceNames())
	// The CLI helper is opt-in (profile "cli") so `up` does not run it.
	assert.Contains(t, p.DisabledServiceNames(), "cli")
}

// pinnedRef reports whether an image reference names an exact tag (or digest):
// not untagged, not `latest`, not a floating major-only tag such as postgres:16.
func pinnedRef(ref string) (bool, string) {
	if at := strings.Index(ref, "@sha256:"); at >= 0 {
		return true, ""
	}
	name, tag := ref, ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	switch {
	case name == "":
		return false, "no image name"
	case tag == "":
		return false, "untagged (means latest)"
	case tag == "latest" || strings.HasPrefix(tag, "latest-"):
		return false, "tag latest"
	case regexp.MustCompile(`^v?\d+$`).MatchString(tag):
		return false, "floating major-version tag"
	}
	return true, ""
}

func TestPinnedRef(t *testing.T) {
	for ref, want := range map[string]bool{
		"postgres:16.9":                             true,
		"prom/prometheus:v3.5.0":                    true,
		"temporalio/server:1.31.0":                  true,
		"localhost:5000/x:1.2":                      true,
		"gcr.io/distroless/static-debian12:nonroot": true,
		"postgres@sha256:0123":                      true,
		"postgres":                                  false,
		"postgres:latest":                           false,
		"postgres:16":                               false,
		"localhost:5000/x":                          false,
	} {
		got, _ := pinnedRef(ref)
		assert.Equal(t, want, got, ref)
	}
}

func TestComposeImagesPinned(t *testing.T) {
	p := loadCompose(t)
	for _, s := range p.Services {
		if s.Build != nil {
			// Our own image: the local tag is ours to choose, but it must not be latest.
			require.NotEmpty(t, s.Image, "%s: built services name their image so all share one build", s.Name)
			ok, why := pinnedRef(s.Image)
			assert.True(t, ok, "%s: image %q: %s", s.Name, s.Image, why)
			continue
		}
		ok, why := pinnedRef(s.Image)
		assert.True(t, ok, "%s: image %q must be pinned: %s", s.Name, s.Image, why)
	}
	for _, name := range []string{"postgresql", "temporal", "temporal-schema", "temporal-admin-tools", "temporal-ui", "prometheus"} {
		s := mustService(t, p, name)
		assert.Nil(t, s.Build, "%s uses an upstream image", name)
	}
	assert.True(t, strings.HasPrefix(mustService(t, p, "postgresql").Image, "postgres:"))
	assert.True(t, strings.HasPrefix(mustService(t, p, "temporal").Image, "temporalio/server:"))
	assert.True(t, strings.HasPrefix(mustService(t, p, "temporal-ui").Image, "temporalio/ui:"))
	assert.True(t, strings.HasPrefix(mustService(t, p, "prometheus").Image, "prom/prometheus:"))
	// Schema job and server come from one Temporal release.
	serverTag := tagOf(mustService(t, p, "temporal").Image)
	for _, name := range []string{"temporal-schema", "temporal-admin-tools"} {
		img := mustService(t, p, name).Image
		assert.True(t, strings.HasPrefix(img, "temporalio/admin-tools:"), "%s: %s", name, img)
		assert.Equal(t, serverTag, tagOf(img), "%s runs the server's admin-tools release", name)
	}
}

func tagOf(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return ""
}

func mustService(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	require.NoError(t, err)
	return s
}

func TestComposePublishedPorts(t *testing.T) {
	p := loadCompose(t)
	type pub struct{ host, container string }
	want := map[string]pub{
		"temporal":    {"7233", "7233"},
		"temporal-ui": {"8233", "8080"},
		"prometheus":  {"9090", "9090"},
		"gateway":     {"8080", "8080"},
	}
	seen := map[string]string{} // host port -> service
	for _, s := range p.Services {
		for _, port := range s.Ports {
			require.NotEmpty(t, port.Published, "%s: port %d published on a random host port", s.Name, port.Target)
			if other, dup := seen[port.Published]; dup {
				t.Errorf("host port %s published by both %s and %s", port.Published, other, s.Name)
			}
			seen[port.Published] = s.Name
		}
	}
	for svc, w := range want {
		s := mustService(t, p, svc)
		found := false
		for _, port := range s.Ports {
			if port.Published == w.host && port.Target == mustUint(t, w.container) && (port.Protocol == "" || port.Protocol == "tcp") {
				found = true
			}
		}
		assert.True(t, found, "%s publishes %s->%s, has %+v", svc, w.host, w.container, s.Ports)
	}
}

func mustUint(t *testing.T, s string) uint32 {
	t.Helper()
	var n uint32
	for _, c := range s {
		require.True(t, c >= '0' && c <= '9', s)
		n = n*10 + uint32(c-'0')
	}
	return n
}

func TestComposeDependsOn(t *testing.T) {
	p := loadCompose(t)
	want := map[string]map[string]string{
		"temporal-schema": {
			"postgresql": types.ServiceConditionHealthy,
		},
		"temporal": {
			"postgresql":      types.ServiceConditionHealthy,
			"temporal-schema": types.ServiceConditionCompletedSuccessfully,
		},
		"temporal-admin-tools": {
			"temporal": types.ServiceConditionHealthy,
		},
		"temporal-ui": {
			"temporal": types.ServiceConditionHealthy,
		},
		"worker": {
			"temporal":             types.ServiceConditionHealthy,
			"temporal-admin-tools": types.ServiceConditionCompletedSuccessfully,
			"register-candidate":   types.ServiceConditionCompletedSuccessfully,
			"gateway":              types.ServiceConditionStarted,
			"prometheus":           types.ServiceConditionStarted,
			"demo-keys":            types.ServiceConditionCompletedSuccessfully,
		},
		// The gateway serves the champion before the first request.
		"loadgen": {
			"route-champion": types.ServiceConditionCompletedSuccessfully,
		},
		"route-champion": {
			"register-candidate": types.ServiceConditionCompletedSuccessfully,
			"gateway":            types.ServiceConditionStarted,
		},
	}
	for svc, deps := range want {
		s := mustService(t, p, svc)
		for dep, cond := range deps {
			got, ok := s.DependsOn[dep]
			if assert.True(t, ok, "%s depends on %s", svc, dep) {
				assert.Equal(t, cond, got.Condition, "%s -> %s condition", svc, dep)
			}
		}
	}
	// A service_healthy edge needs a healthcheck on its target, and a
	// service_completed_successfully edge a one-shot (non-restarting) target.
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			target := mustService(t, p, dep)
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if assert.NotNil(t, target.HealthCheck, "%s waits for %s healthy but it has no healthcheck", s.Name, dep) {
					assert.False(t, target.HealthCheck.Disable, dep)
					assert.NotEmpty(t, target.HealthCheck.Test, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				assert.NotContains(t, []string{"always", "unless-stopped"}, target.Restart,
					"%s waits for %s to complete, so it must not restart forever", s.Name, dep)
			}
		}
	}
	hc := mustService(t, p, "postgresql").HealthCheck
	require.NotNil(t, hc)
	assert.Contains(t, strings.Join(hc.Test, " "), "pg_isready")
}

func TestComposeTemporalSetup(t *testing.T) {
	p := loadCompose(t)
	temporal := mustService(t, p, "temporal")
	env := envOf(temporal)
	assert.Equal(t, "postgres12", env["DB"])
	assert.Equal(t, "postgresql", env["POSTGRES_SEEDS"])
	assert.Equal(t, "0.0.0.0", env["BIND_ON_IP"], "the frontend must listen beyond the container's loopback")
	assert.Equal(t, env["DB"], envOf(mustService(t, p, "temporal-schema"))["DB"])

	// The search attributes the workflows upsert are registered before the worker starts.
	script := filepath.Join(repoRoot(t), "examples", "compose", "temporal", "register.sh")
	b, err := os.ReadFile(script)
	require.NoError(t, err)
	attrs := map[string]string{}
	re := regexp.MustCompile(`\b(Mlrelease\w+)[ \t]+(Keyword|Int|Text|Double|Bool|Datetime|KeywordList)\b`)
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		attrs[m[1]] = m[2]
	}
	assert.Equal(t, map[string]string{
		"MlreleaseModel":            "Keyword",
		"MlreleaseCandidateVersion": "Keyword",
		"MlreleaseStage":            "Keyword",
		"MlreleaseCanaryWeight":     "Int",
	}, attrs)
	assert.Contains(t, string(b), "temporal operator search-attribute create")
	admin := mustService(t, p, "temporal-admin-tools")
	assert.Equal(t, "temporal:7233", envOf(admin)["TEMPORAL_ADDRESS"])
	assert.Contains(t, strings.Join(admin.Command, " "), "register.sh")
	assert.Equal(t, "temporal:7233", envOf(mustService(t, p, "temporal-ui"))["TEMPORAL_ADDRESS"])
}

func envOf(s types.ServiceConfig) map[string]string {
	m := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			m[k] = *v
		}
	}
	return m
}

func TestComposeOurServices(t *testing.T) {
	p := loadCompose(t)
	root := repoRoot(t)
	all := map[string]types.ServiceConfig{}
	for name, s := range p.Services {
		all[name] = s
	}
	for name, s := range p.DisabledServices {
		all[name] = s
	}
	images := map[string]bool{}
	for name, bin := range ourServices {
		s, ok := all[name]
		require.True(t, ok, "service %s", name)
		require.NotNil(t, s.Build, "%s is built from the repo", name)
		assert.Equal(t, root, filepath.Clean(s.Build.Context), "%s: build context is the repo root", name)
		assert.Equal(t, "Dockerfile", s.Build.Dockerfile, "%s: the repo Dockerfile", name)
		images[s.Image] = true
		require.NotEmpty(t, s.Command, "%s chooses its binary", name)
		assert.Equal(t, bin, s.Command[0], "%s runs %s", name, bin)
	}
	assert.Len(t, images, 1, "one image for all our services: %v", images)
	// And nothing else is built.
	for name, s := range p.Services {
		if _, ours := ourServices[name]; !ours {
			assert.Nil(t, s.Build, "%s", name)
		}
	}

	gw := envOf(mustService(t, p, "gateway"))
	assert.Equal(t, ":8080", gw["MLRELEASE_GATEWAY_LISTEN"])
	assert.Equal(t, "dev-token", gw["MLRELEASE_GATEWAY_ADMIN_TOKEN"])

	worker := mustService(t, p, "worker")
	w := envOf(worker)
	assert.Equal(t, map[string]string{
		"TEMPORAL_ADDRESS":              "temporal:7233",
		"TEMPORAL_NAMESPACE":            "default",
		"MLRELEASE_REGISTRY_PATH":       "/data/registry.db",
		"MLRELEASE_GATEWAY_URL":         "http://gateway:8080",
		"MLRELEASE_GATEWAY_ADMIN_TOKEN": "dev-token",
		"MLRELEASE_PROMETHEUS_URL":      "http://prometheus:9090",
		"MLRELEASE_WORKER_LISTEN":       ":8090",
	}, pick(w, "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "MLRELEASE_REGISTRY_PATH",
		"MLRELEASE_GATEWAY_URL", "MLRELEASE_GATEWAY_ADMIN_TOKEN", "MLRELEASE_PROMETHEUS_URL",
		"MLRELEASE_WORKER_LISTEN"))
	// The registry and the gateway's routes survive container re-creation: each
	// service's /data is a named volume.
	assertDataVolume(t, p, worker)
	gateway := mustService(t, p, "gateway")
	assertDataVolume(t, p, gateway)
	assert.Equal(t, "/data/gateway-state.json", gw["MLRELEASE_GATEWAY_STATE_FILE"])

	champion := strings.Join(mustService(t, p, "champion").Command, " ")
	candidate := strings.Join(mustService(t, p, "candidate").Command, " ")
	assert.Equal(t, "modelserver -listen :8101 -model /models/v1.json -version 1", champion)
	assert.Equal(t, "modelserver -listen :8102 -model /models/v2.json -version 2", candidate)
	loadgen := mustService(t, p, "loadgen").Command
	assert.Contains(t, strings.Join(loadgen, " "), "-url http://gateway:8080/models/wine/invocations")
}

func assertDataVolume(t *testing.T, p *types.Project, s types.ServiceConfig) {
	t.Helper()
	var dataVol *types.ServiceVolumeConfig
	for i, v := range s.Volumes {
		if v.Target == "/data" {
			dataVol = &s.Volumes[i]
		}
	}
	if assert.NotNil(t, dataVol, "%s mounts /data", s.Name) {
		assert.Equal(t, types.VolumeTypeVolume, dataVol.Type)
		assert.Contains(t, p.Volumes, dataVol.Source)
	}
}

func pick(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// One admin token, taken from the environment when set, shared by gateway and worker.
func TestComposeAdminTokenInterpolation(t *testing.T) {
	p := loadCompose(t, "MLRELEASE_GATEWAY_ADMIN_TOKEN=s3cret-from-env")
	assert.Equal(t, "s3cret-from-env", envOf(mustService(t, p, "gateway"))["MLRELEASE_GATEWAY_ADMIN_TOKEN"])
	assert.Equal(t, "s3cret-from-env", envOf(mustService(t, p, "worker"))["MLRELEASE_GATEWAY_ADMIN_TOKEN"])
}

// Every file or directory bound into a container exists in the repo (a missing
// bind source makes Docker create an empty directory in its place).
func TestComposeMountsExist(t *testing.T) {
	p := loadCompose(t)
	root := repoRoot(t)
	binds := 0
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				binds++
				rel, err := filepath.Rel(root, v.Source)
				require.NoError(t, err)
				assert.False(t, strings.HasPrefix(rel, ".."), "%s mounts %s from outside the repo", s.Name, v.Source)
				_, err = os.Stat(v.Source)
				assert.NoError(t, err, "%s mounts %s", s.Name, rel)
				assert.True(t, v.ReadOnly, "%s: config mount %s should be read-only", s.Name, rel)
			case types.VolumeTypeVolume:
				assert.Contains(t, p.Volumes, v.Source, "%s: named volume %s declared", s.Name, v.Source)
			}
		}
		for _, c := range s.Configs {
			cfg, ok := p.Configs[c.Source]
			if assert.True(t, ok, c.Source) && cfg.File != "" {
				_, err := os.Stat(cfg.File)
				assert.NoError(t, err, "%s: config %s", s.Name, cfg.File)
			}
		}
	}
	assert.GreaterOrEqual(t, binds, 4, "prometheus.yml, dynamic config and the two job scripts")
	for _, name := range []string{"postgresql", "worker", "prometheus"} {
		named := false
		for _, v := range mustService(t, p, name).Volumes {
			named = named || v.Type == types.VolumeTypeVolume
		}
		assert.True(t, named, "%s keeps its data in a named volume", name)
	}
}

// promConfig is the part of Prometheus's configuration this stack uses; decoding
// with KnownFields catches misspelt keys.
type promConfig struct {
	Global struct {
		ScrapeInterval     model.Duration `yaml:"scrape_interval"`
		EvaluationInterval model.Duration `yaml:"evaluation_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName        string         `yaml:"job_name"`
		ScrapeInterval model.Duration `yaml:"scrape_interval"`
		MetricsPath    string         `yaml:"metrics_path"`
		Scheme         string         `yaml:"scheme"`
		StaticConfigs  []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func TestComposePrometheusConfig(t *testing.T) {
	p := loadCompose(t)
	prom := mustService(t, p, "prometheus")
	var src string
	for _, v := range prom.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == "/etc/prometheus/prometheus.yml" {
			src = v.Source
		}
	}
	require.NotEmpty(t, src, "prometheus mounts its config at /etc/prometheus/prometheus.yml")
	assert.Equal(t, filepath.Join(repoRoot(t), "examples", "compose", "prometheus.yml"), src)
	assert.Contains(t, prom.Command, "--config.file=/etc/prometheus/prometheus.yml")

	b, err := os.ReadFile(src)
	require.NoError(t, err)
	var cfg promConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&cfg), "prometheus.yml parses")

	targets := map[string]string{} // target -> metrics path
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		assert.False(t, jobs[sc.JobName], "job %s defined twice", sc.JobName)
		jobs[sc.JobName] = true
		interval := sc.ScrapeInterval
		if interval == 0 {
			interval = cfg.Global.ScrapeInterval
		}
		assert.Equal(t, model.Duration(5*time.Second), interval, "job %s scrapes every 5s", sc.JobName)
		path := sc.MetricsPath
		if path == "" {
			path = "/metrics"
		}
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				targets[tg] = path
			}
		}
	}
	got := make([]string, 0, len(targets))
	for tg := range targets {
		got = append(got, tg)
	}
	sort.Strings(got)
	assert.Equal(t, []string{"gateway:8080", "worker:8090"}, got)
	for tg, path := range targets {
		assert.Equal(t, "/metrics", path, tg)
	}
	// The scraped addresses are the ones the services listen on.
	assert.Equal(t, ":8080", envOf(mustService(t, p, "gateway"))["MLRELEASE_GATEWAY_LISTEN"])
	assert.Equal(t, ":8090", envOf(mustService(t, p, "worker"))["MLRELEASE_WORKER_LISTEN"])
}

// The repo Dockerfile builds every binary the compose services run and ships the
// demo data at the paths their commands use.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	df := string(b)

	// Base images pinned (ARG defaults substituted).
	args := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^ARG\s+(\w+)=(\S+)`).FindAllStringSubmatch(df, -1) {
		args[m[1]] = m[2]
	}
	froms := regexp.MustCompile(`(?m)^FROM\s+(?:--\S+\s+)*(\S+)`).FindAllStringSubmatch(df, -1)
	require.GreaterOrEqual(t, len(froms), 2, "multi-stage build")
	for _, m := range froms {
		ref := regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(m[1], func(v string) string {
			return args[v[2:len(v)-1]]
		})
		ok, why := pinnedRef(ref)
		assert.True(t, ok, "FROM %s: %s", ref, why)
	}
	assert.Contains(t, df, "CGO_ENABLED=0")
	assert.Contains(t, df, "gcr.io/distroless/static")

	// Every Go main package built, and built under the binary name compose uses.
	for _, pkg := range []string{"./worker", "./gateway", "./starter", "./examples/demo/modelserver", "./examples/demo/loadgen"} {
		assert.Contains(t, df, pkg)
		gofiles, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(pkg), "*.go"))
		assert.NotEmpty(t, gofiles, "package %s exists", pkg)
	}
	assert.Contains(t, df, "-o /out/mlrelease ./starter")

	// Demo data copied to the paths the model servers and loadgen read.
	assert.Regexp(t, `(?m)^COPY\s+examples/demo/models/\s+/models/`, df)
	assert.Regexp(t, `(?m)^COPY\s+examples/demo/data/\s+/demo/data/`, df)
	p := loadCompose(t)
	paths := map[string]string{ // in-image path -> repo path
		"/models/":    "examples/demo/models/",
		"/demo/data/": "examples/demo/data/",
	}
	for _, name := range []string{"champion", "candidate", "loadgen"} {
		for _, arg := range mustService(t, p, name).Command {
			for img, repo := range paths {
				if strings.HasPrefix(arg, img) {
					f := filepath.Join(root, filepath.FromSlash(repo+strings.TrimPrefix(arg, img)))
					_, err := os.Stat(f)
					assert.NoError(t, err, "%s reads %s, shipped from %s", name, arg, f)
				}
			}
		}
	}

	// .dockerignore keeps local state out of the context but not what the build needs.
	di, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	require.NoError(t, err)
	ignored := strings.Fields(string(di))
	for _, need := range []string{"go.mod", "go.sum", "examples/demo", "examples", "worker", "gateway", "starter", "internal", "Dockerfile"} {
		assert.False(t, slices.Contains(ignored, need) || slices.Contains(ignored, need+"/"), ".dockerignore must not exclude %s", need)
	}
}

// Grafana is provisioned with the Prometheus datasource and the dashboard that
// examples/compose/grafana's test checks.
func TestComposeGrafana(t *testing.T) {
	p := loadCompose(t)
	g := mustService(t, p, "grafana")
	var mounts []string
	for _, v := range g.Volumes {
		mounts = append(mounts, v.Target)
		_, err := os.Stat(v.Source)
		assert.NoError(t, err, "grafana mounts %s", v.Source)
	}
	assert.ElementsMatch(t, []string{"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"}, mounts)
	assert.Equal(t, types.ServiceConditionStarted, g.DependsOn["prometheus"].Condition)
}

// Every `up` runs the setup jobs again: they must not move the champion back, and
// the gateway serves the champion before the load generator's first request.
func TestComposeSetupIsRepeatable(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"register-champion", "register-candidate"} {
		assert.Contains(t, mustService(t, p, name).Command, "--if-absent", name)
	}
	route := mustService(t, p, "route-champion")
	assert.Equal(t, []string{"mlrelease", "route", "wine"}, []string(route.Command))
	env := envOf(route)
	assert.Equal(t, "http://gateway:8080", env["MLRELEASE_GATEWAY_URL"])
	assert.Equal(t, "dev-token", env["MLRELEASE_GATEWAY_ADMIN_TOKEN"])
	assert.Equal(t, "/data/registry.db", env["MLRELEASE_REGISTRY_PATH"])

	// The worker trusts the demo people's keys, made in its volume.
	keys := mustService(t, p, "demo-keys")
	assert.Equal(t, []string{"mlrelease", "keys", "/data/keys", "alice", "bob"}, []string(keys.Command))
	assert.Equal(t, "/data/keys/allowed_signers", envOf(mustService(t, p, "worker"))["MLRELEASE_ALLOWED_SIGNERS"])
}
