package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/workflows"
)

// testApp runs commands without Temporal: dial fails, and the settings point at a
// registry in a temporary directory.
func testApp(t *testing.T) (*app, *bytes.Buffer, *bytes.Buffer, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	regPath := filepath.Join(t.TempDir(), "registry.db")
	a := &app{
		stdout: &stdout, stderr: &stderr,
		dial: func() (client.Client, string, error) {
			return nil, "", errors.New("connect to Temporal at localhost:7233: connection refused")
		},
		settings: func() (config.Worker, error) {
			return config.Worker{TaskQueue: "mlrelease", RegistryPath: regPath, WebUIURL: "http://localhost:8233"}, nil
		},
	}
	return a, &stdout, &stderr, regPath
}

func TestRunExitCodesAndMessages(t *testing.T) {
	badPlan := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badPlan, []byte("model: \"wine x\"\ncanary:\n  steps: [{weight: 0, bake: 1m}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args       []string
		code       int
		stdout     string
		stderr     []string // each line must contain the string, in order
		noDialCall bool
	}{
		{args: nil, code: exitUsage, stderr: []string{"mlrelease: controlled releases"}},
		{args: []string{"help"}, code: exitOK, stdout: "mlrelease watch MODEL [--every 2s]"},
		{args: []string{"help", "approve"}, code: exitOK, stdout: "-signal"},
		{args: []string{"approve", "-h"}, code: exitOK, stdout: "Usage: mlrelease approve MODEL"},
		{args: []string{"help", "nope"}, code: exitUsage, stderr: []string{`mlrelease: unknown command "nope"`}},
		{args: []string{"promote", "wine"}, code: exitUsage, stderr: []string{`mlrelease: unknown command "promote": see ` + "`mlrelease help`"}},
		{args: []string{"status"}, code: exitUsage, stderr: []string{"mlrelease: status: missing arguments (usage: mlrelease status MODEL"}},
		{args: []string{"status", "wine", "beer"}, code: exitUsage, stderr: []string{"unexpected arguments: beer"}},
		{args: []string{"status", "wine", "-o", "yaml"}, code: exitUsage, stderr: []string{`-o "yaml": want text or json`}},
		{args: []string{"status", "wine", "--bogus"}, code: exitUsage, stderr: []string{"flag provided but not defined: -bogus"}},
		{args: []string{"watch", "wine", "--every", "0s"}, code: exitUsage, stderr: []string{"--every 0s: want a positive duration"}},
		{args: []string{"reject", "wine"}, code: exitUsage, stderr: []string{"--comment is required: say why you reject"}},
		{args: []string{"abort", "wine", "--as", "bob", "--comment", " "}, code: exitUsage, stderr: []string{"say why you abort"}},
		{args: []string{"start"}, code: exitUsage, stderr: []string{"-f plan.yaml is required"}},
		{args: []string{"start", "-f", badPlan}, code: exitError, stderr: []string{
			"mlrelease: plan " + badPlan + `: model: "wine x" must be`, "  canary.steps[0].weight: 0 is outside 1..100", "  analysis.metrics: is empty"}},
		{args: []string{"register", "wine", "1"}, code: exitUsage, stderr: []string{"--endpoint URL is required"}},
		{args: []string{"register", "wine", "1", "--endpoint", "ftp://host/x"}, code: exitUsage, stderr: []string{`--endpoint "ftp://host/x": want an http or https URL`}},
		{args: []string{"register", "wine", "1", "--endpoint", "http://h:1", "--meta", "novalue"}, code: exitUsage, stderr: []string{`"novalue": want key=value`}},
		{args: []string{"status", "wine"}, code: exitError, stderr: []string{"mlrelease: connect to Temporal at localhost:7233: connection refused"}},
		{args: []string{"approve", "wine", "--as", "alice", "--unsigned"}, code: exitError, stderr: []string{"mlrelease: connect to Temporal"}},
		{args: []string{"approve", "wine", "--as", "alice", "--key", "/nonexistent/key"}, code: exitError, stderr: []string{"mlrelease: signing key: open /nonexistent/key"}},
		{args: []string{"approve", "wine", "--ttl", "2h", "--key", "/nonexistent/key"}, code: exitUsage, stderr: []string{"--ttl 2h0m0s: want more than 0s and at most 1h0m0s"}},
		{args: []string{"sign", "promote", "wine"}, code: exitUsage, stderr: []string{`"promote" is not a decision`}},
		{args: []string{"sign", "abort", "wine"}, code: exitUsage, stderr: []string{"--comment is required: say why you abort"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			a, stdout, stderr, _ := testApp(t)
			if code := a.run(context.Background(), tt.args); code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, stdout)
			}
			if tt.stderr == nil {
				if tt.code != exitUsage && stderr.Len() > 0 {
					t.Errorf("unexpected stderr:\n%s", stderr)
				}
				return
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(tt.stderr) > 1 && len(lines) < len(tt.stderr) {
				t.Fatalf("stderr has %d lines, want at least %d:\n%s", len(lines), len(tt.stderr), stderr)
			}
			for i, want := range tt.stderr {
				if !strings.Contains(lines[i], want) {
					t.Errorf("stderr line %d %q lacks %q", i+1, lines[i], want)
				}
			}
		})
	}
}

func TestStartNeedsARegistry(t *testing.T) {
	a, _, stderr, _ := testApp(t)
	p := filepath.Join(t.TempDir(), "wine.yaml")
	if err := os.WriteFile(p, []byte("model: wine\nanalysis:\n  metrics: [{name: e, query: up, max: 1}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := a.run(context.Background(), []string{"start", "-f", p, "--as", "carol", "--unsigned"}); code != exitError {
		t.Fatalf("exit %d, want %d", code, exitError)
	}
	if !strings.HasPrefix(stderr.String(), "mlrelease: no registry at ") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("stderr %q, want one line naming the missing registry", stderr)
	}
}

func TestRegisterWritesTheLocalRegistry(t *testing.T) {
	a, stdout, stderr, regPath := testApp(t)
	args := []string{"register", "wine", "1", "--endpoint", "http://127.0.0.1:8001", "--alias", "champion", "--meta", "framework=sklearn", "--meta", "run=abc=1"}
	if code := a.run(context.Background(), args); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if want := "registered wine 1 at http://127.0.0.1:8001 (aliases: champion) in " + regPath + "\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	reg, err := registry.OpenSQLite(regPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	v, err := reg.ResolveAlias(context.Background(), "wine", registry.AliasChampion)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "1" || v.Endpoint != "http://127.0.0.1:8001" || v.Metadata["framework"] != "sklearn" || v.Metadata["run"] != "abc=1" {
		t.Errorf("registered %+v", v)
	}
}

func TestParseTakesFlagsAnywhere(t *testing.T) {
	for _, args := range [][]string{
		{"wine", "--comment", "ok", "--as", "bob"},
		{"--as", "bob", "wine", "--comment", "ok"},
		{"--comment=ok", "--as=bob", "wine"},
	} {
		fs := flag.NewFlagSet("approve", flag.ContinueOnError)
		comment := fs.String("comment", "", "")
		as := fs.String("as", "", "")
		pos, err := parse(fs, args, 1, 1)
		if err != nil || len(pos) != 1 || pos[0] != "wine" || *comment != "ok" || *as != "bob" {
			t.Errorf("parse(%q) = %q, %v; comment %q, as %q", args, pos, err, *comment, *as)
		}
	}
}

func TestProgressBar(t *testing.T) {
	for _, tt := range []struct {
		percent int
		want    string
	}{
		{0, "[----------] 0%"},
		{1, "[#---------] 1%"},
		{10, "[#---------] 10%"},
		{25, "[###-------] 25%"},
		{50, "[#####-----] 50%"},
		{100, "[##########] 100%"},
		{150, "[##########] 100%"},
		{-5, "[----------] 0%"},
	} {
		if got := progressBar(tt.percent); got != tt.want {
			t.Errorf("progressBar(%d) = %q, want %q", tt.percent, got, tt.want)
		}
	}
}

func f(v float64) *float64 { return &v }

func sampleStatus() workflows.Status {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	return workflows.Status{
		ReleaseID: "release/wine", Model: "wine", Champion: "1", Candidate: "2",
		Stage: workflows.StageCanary, Paused: true, CandidateWeight: 50, Step: 2,
		Steps:     []plan.Step{{Weight: 10}, {Weight: 50}, {Weight: 100}},
		StartedBy: "carol", StartedAt: at, UpdatedAt: at.Add(10 * time.Minute),
		ApprovalRequired: true, Approvers: []string{"alice", "bob"},
		Gates: []workflows.Gate{{Name: "accuracy", Verdict: analysis.Pass, Message: "0.93 >= 0.85"}},
		Analyses: []workflows.AnalysisRound{
			{Stage: workflows.StageCanary, Step: 1, Weight: 10, At: at.Add(5 * time.Minute)},
			{Stage: workflows.StageCanary, Step: 2, Weight: 50, At: at.Add(9 * time.Minute), Measurements: []analysis.Measurement{
				{Metric: "error_rate", Verdict: analysis.Pass, Value: f(0.002), Baseline: f(0.003), Message: "within [-inf, 0.01]"},
				{Metric: "p99", Verdict: analysis.Hold, Message: "no data (policy: hold)"},
			}},
		},
		Decisions: []workflows.Decision{
			{Kind: "approve", Who: "mallory", Source: "slack", Channel: "signal", At: at.Add(7 * time.Minute), Refused: true, Reason: "cannot approve at stage canary"},
			{Kind: "pause", Who: "bob", Comment: "checking dashboards", Source: "cli", Channel: "update", At: at.Add(8 * time.Minute)},
		},
	}
}

func TestStatusText(t *testing.T) {
	st := sampleStatus()
	got := statusText(st)
	local := func(d time.Duration) string { return st.StartedAt.Add(d).Local().Format(timeFormat) }
	for _, want := range []string{
		"release/wine  stage canary (paused), updated " + local(10*time.Minute) + "\n",
		"  model      wine: candidate 2 vs champion 1\n",
		"  started    " + local(0) + " by carol\n",
		"  canary     [#####-----] 50%, step 2/3; shadow 0%\n",
		"  approval   required from alice, bob\n",
		"gates\n  pass  accuracy: 0.93 >= 0.85\n",
		"latest analysis: canary step 2 at 50%, " + local(9*time.Minute) + " (2 rounds so far)\n",
		"  pass  error_rate = 0.002 (champion 0.003): within [-inf, 0.01]\n",
		"  hold  p99 = no data: no data (policy: hold)\n",
		"  " + local(7*time.Minute) + "  approve by mallory (slack, signal) REFUSED: cannot approve at stage canary\n",
		"  " + local(8*time.Minute) + "  pause by bob (cli, update): checking dashboards\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "promoted") || strings.Contains(got, "rolled back") {
		t.Errorf("a running release shows an outcome:\n%s", got)
	}

	st.Stage, st.Paused, st.Outcome, st.Reason = workflows.StageRolledBack, false, workflows.OutcomeRolledBack, "canary analysis at 50%: error_rate failed"
	if got := statusText(st); !strings.HasSuffix(got, "\nrolled back: champion 1 of wine kept (canary analysis at 50%: error_rate failed)\n") {
		t.Errorf("rolled back status ends:\n%s", got)
	}
}

func TestWatchLine(t *testing.T) {
	st := sampleStatus()
	want := st.UpdatedAt.Local().Format("15:04:05") + "  canary (paused)    [#####-----] 50%   step 2/3  error_rate=pass(0.002) p99=hold(no data)"
	if got := watchLine(st); got != want {
		t.Errorf("watchLine:\n got %q\nwant %q", got, want)
	}
	st = workflows.Status{Stage: workflows.StageShadow, ShadowShare: 20, UpdatedAt: st.UpdatedAt}
	want = st.UpdatedAt.Local().Format("15:04:05") + "  shadow             [----------] 0%    shadow 20%"
	if got := watchLine(st); got != want {
		t.Errorf("watchLine:\n got %q\nwant %q", got, want)
	}
}

func TestListText(t *testing.T) {
	var b bytes.Buffer
	if err := listText(&b, nil, "wine"); err != nil || b.String() != "no releases of model wine\n" {
		t.Errorf("empty list: %q, %v", b.String(), err)
	}
	b.Reset()
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	rs := []release.Release{
		{WorkflowID: "release/wine", Status: "running", Stage: workflows.StageCanary, Candidate: "3", Weight: 10, StartedAt: at},
		{WorkflowID: "release/wine", Status: "completed", Stage: workflows.StagePromoted, Candidate: "2", Weight: 100, StartedAt: at.Add(-time.Hour), ClosedAt: at.Add(-time.Minute)},
	}
	if err := listText(&b, rs, ""); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "WORKFLOW      STATUS     STAGE") ||
		!strings.Contains(lines[1], "running    canary    3          10%") || !strings.HasSuffix(lines[1], "-") ||
		!strings.HasSuffix(lines[2], at.Add(-time.Minute).Local().Format(timeFormat)) {
		t.Errorf("list:\n%s", b.String())
	}
}

func TestStartedText(t *testing.T) {
	p := &plan.Plan{Model: "wine", Approval: plan.Approval{Required: true, Approvers: []string{"alice"}}}
	got := startedText("started release wine 2 (champion 1)", p, "release/wine", "run-1",
		"http://localhost:8233/namespaces/default/workflows/release%2Fwine")
	want := `started release wine 2 (champion 1)
  workflow  release/wine (run run-1)
  web UI    http://localhost:8233/namespaces/default/workflows/release%2Fwine
  watch     mlrelease watch wine
  approve   mlrelease approve wine   (approvers: alice)
  abort     mlrelease abort wine --comment "why"
`
	if got != want {
		t.Errorf("started text:\n%s\nwant:\n%s", got, want)
	}
	p.Approval = plan.Approval{}
	if got := startedText("x", p, "release/wine", "r", "u"); !strings.Contains(got, "approve   not needed") {
		t.Errorf("no approval:\n%s", got)
	}
}

func TestDecidedText(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	got := decidedText("wine", workflows.Decision{Kind: "approve", Who: "alice", Channel: "update", At: at})
	if want := "release/wine: approve by alice, recorded at " + at.Local().Format(timeFormat); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = decidedText("wine", workflows.Decision{Kind: "abort", Who: "alice", Channel: "signal", At: at})
	if !strings.HasPrefix(got, "sent abort to release/wine as alice by signal") {
		t.Errorf("signal: %q", got)
	}
}

func TestOutcomeText(t *testing.T) {
	st := workflows.Status{Model: "wine", Champion: "1", Candidate: "2", Stage: workflows.StagePromoted,
		Outcome: workflows.OutcomePromoted, Reason: "every gate passed; approved by alice"}
	if got, want := outcomeText(st), "promoted: version 2 of wine is the champion (every gate passed; approved by alice)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPrintError(t *testing.T) {
	var b bytes.Buffer
	printError(&b, errors.New("plan p.yaml: model: bad\ncanary.steps[0].weight: bad"))
	if want := "mlrelease: plan p.yaml: model: bad\n  canary.steps[0].weight: bad\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestIdentity(t *testing.T) {
	if who, err := identity(" bob "); err != nil || who != "bob" {
		t.Errorf("identity(bob) = %q, %v", who, err)
	}
	if who, err := identity(""); err != nil || who == "" {
		t.Errorf("identity() = %q, %v; want the OS user", who, err)
	}
}
