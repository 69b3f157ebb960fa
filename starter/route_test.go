package main

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/gateway"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/workflows"
)

// A setup run at every start (docker compose up) registers the champion once and
// routes the gateway to it once: after a promotion, running it again changes nothing.
func TestRegisterIfAbsentAndRoute(t *testing.T) {
	a, stdout, stderr, regPath := testApp(t)
	g, err := gateway.New(gateway.Options{AdminToken: "tok", Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	a.settings = func() (config.Worker, error) {
		return config.Worker{Registry: "sqlite", RegistryPath: regPath, GatewayURL: srv.URL, GatewayAdminToken: "tok"}, nil
	}
	run := func(args ...string) string {
		t.Helper()
		stdout.Reset()
		if code := a.run(context.Background(), args); code != exitOK {
			t.Fatalf("%v: exit %d; stderr:\n%s", args, code, stderr)
		}
		return stdout.String()
	}
	setup := func() {
		run("register", "wine", "1", "--endpoint", "http://champion:8101", "--alias", "champion", "--if-absent")
		run("register", "wine", "2", "--endpoint", "http://candidate:8102", "--if-absent")
	}
	setup()
	if out := run("route", "wine"); !strings.Contains(out, "now sends all traffic to champion 1 at http://champion:8101") {
		t.Fatalf("first route: %q", out)
	}

	// A promotion moved the champion alias and the route to version 2.
	run("register", "wine", "2", "--endpoint", "http://candidate:8102", "--alias", "champion")
	gw := deploy.NewGateway(srv.URL, "tok", nil)
	if _, err := gw.Apply(context.Background(), deploy.Traffic{Model: "wine", Champion: deploy.Backend{Version: "2", URL: "http://candidate:8102"}}); err != nil {
		t.Fatal(err)
	}

	// The setup again: nothing moves back.
	setup()
	if out := run("route", "wine"); !strings.Contains(out, "has routes already (champion 2); unchanged") {
		t.Fatalf("second route: %q", out)
	}
	if out := run("register", "wine", "1", "--endpoint", "http://champion:8101", "--alias", "champion", "--if-absent"); !strings.Contains(out, "registered already") {
		t.Fatalf("second register: %q", out)
	}
	cur, err := gw.Current(context.Background(), "wine")
	if err != nil || cur.Champion.Version != "2" {
		t.Fatalf("routes after the second setup: %+v, %v", cur, err)
	}
	reg, err := registry.OpenSQLite(regPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if champ, err := reg.ResolveAlias(context.Background(), "wine", registry.AliasChampion); err != nil || champ.Version != "2" {
		t.Fatalf("champion after the second setup: %+v, %v", champ, err)
	}
}

// Demo keys for a compose stack: made once, kept on a second run, trusted by the
// allowed-signers file, usable to sign.
func TestKeys(t *testing.T) {
	a, stdout, stderr, _ := testApp(t)
	dir := t.TempDir()
	if code := a.run(context.Background(), []string{"keys", dir, "alice", "bob"}); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	first, err := os.ReadFile(filepath.Join(dir, "allowed_signers"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), filepath.Join(dir, "alice")) || strings.Count(string(first), "\n") != 2 {
		t.Fatalf("stdout %q, allowed signers %q", stdout, first)
	}
	if code := a.run(context.Background(), []string{"keys", dir, "alice", "bob"}); code != exitOK {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "allowed_signers"))
	if string(again) != string(first) {
		t.Fatal("a second run changed the keys")
	}
	if code := a.run(context.Background(), []string{"keys", dir, "bad name"}); code != exitUsage {
		t.Fatalf("a bad name: exit %d", code)
	}
}

// watch draws each metric's latest values as a sparkline before its verdict, with a
// failed round as "!", and status links the release's report.
func TestWatchSparklinesAndReportLink(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	st := workflows.Status{ReleaseID: "release/wine", Model: "wine", Stage: workflows.StageCanary, CandidateWeight: 50,
		Report:   "http://127.0.0.1:8090/releases/wine",
		Analyses: []workflows.AnalysisRound{{Measurements: []analysis.Measurement{{Metric: "error-rate", Verdict: analysis.Fail, Value: f(0.3)}}}},
		Series: []workflows.MetricSeries{{Metric: "error-rate", Points: []workflows.SeriesPoint{
			{Candidate: f(0.01), Verdict: analysis.Pass}, {Candidate: f(0.02), Verdict: analysis.Pass}, {Verdict: analysis.Hold},
			{Candidate: f(0.08), Verdict: analysis.Pass}, {Candidate: f(0.3), Verdict: analysis.Fail}}}}}
	if got := watchLine(st); !strings.Contains(got, "error-rate ▁▁ ▃! fail(0.3)") {
		t.Errorf("watch line %q", got)
	}
	if got := statusText(st); !strings.Contains(got, "  report     http://127.0.0.1:8090/releases/wine\n") {
		t.Errorf("status lacks the report:\n%s", got)
	}
}
