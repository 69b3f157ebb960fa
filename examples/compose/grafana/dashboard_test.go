// Package grafana holds the Grafana dashboard that docker compose provisions; this
// test checks it against the metrics the gateway and the worker really export.
package grafana_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlrelease/mlrelease/internal/gateway"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/workflows"
)

type dashboard struct {
	UID         string `json:"uid"`
	Title       string `json:"title"`
	Annotations struct {
		List []struct {
			Expr       string     `json:"expr"`
			Datasource datasource `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []struct {
		ID         int        `json:"id"`
		Title      string     `json:"title"`
		Type       string     `json:"type"`
		Datasource datasource `json:"datasource"`
		GridPos    struct{ W, H int }
		Targets    []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// recorder keeps the collectors registered with it, to read their descriptions.
type recorder struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// exported lists the series names the gateway and the worker export: each metric's
// name, and a histogram's _bucket, _count and _sum.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	rec := &recorder{Registerer: prometheus.NewRegistry()}
	if _, err := gateway.New(gateway.Options{Registerer: rec, Gatherer: prometheus.NewRegistry()}); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{workflows.MetricRefused: true}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names[m[1]] = true
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				names[m[1]+suffix] = true
			}
		}
	}
	return names
}

var metricName = regexp.MustCompile(`\bmlrelease_[a-z0-9_]+\b`)

func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("dashboards", "mlrelease.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 || len(d.Annotations.List) == 0 {
		t.Fatalf("dashboard uid %q title %q, %d panels, %d annotations", d.UID, d.Title, len(d.Panels), len(d.Annotations.List))
	}
	names := exported(t)
	var exprs []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.Title == "" || p.Type != "timeseries" || p.GridPos.W == 0 || p.GridPos.H == 0 || len(p.Targets) == 0 {
			t.Errorf("panel %d %q: id once, a title, a timeseries with a place and targets", p.ID, p.Title)
		}
		ids[p.ID] = true
		if p.Datasource.UID != "prometheus" {
			t.Errorf("panel %q: datasource %q, want the provisioned prometheus", p.Title, p.Datasource.UID)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		exprs = append(exprs, a.Expr)
	}
	for _, e := range exprs {
		used := metricName.FindAllString(e, -1)
		if len(used) == 0 {
			t.Errorf("query names no mlrelease metric: %s", e)
		}
		for _, n := range used {
			if !names[n] {
				t.Errorf("query names %s, which neither the gateway nor the worker exports: %s", n, e)
			}
		}
	}
	checkPromQL(t, exprs)
}

// checkPromQL has Prometheus's own promtool parse every query, with Grafana's
// variables as Grafana fills them in.
func checkPromQL(t *testing.T, exprs []string) {
	root, err := devserver.Root()
	if err != nil {
		t.Fatal(err)
	}
	promtool, err := devserver.Find(root, "promtool")
	if err != nil {
		t.Fatalf("%v: it comes with Prometheus (make prometheus)", err)
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		e = strings.NewReplacer("$model", "wine", "$__rate_interval", "1m").Replace(e)
		q, _ := json.Marshal(e) // a JSON string is a YAML string
		rules.WriteString("      - record: dashboard:query" + string(rune('a'+i)) + "\n        expr: " + string(q) + "\n")
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool rejects a dashboard query: %v\n%s", err, out)
	}
}
