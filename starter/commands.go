package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/workflows"
)

func (a *app) start(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	file := fs.String("f", "", "the release plan (YAML)")
	version := fs.String("version", "", "release this version instead of the plan's candidate")
	sf := addSigningFlags(fs, "the start")
	if _, err := parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *file == "" {
		return usagef("-f plan.yaml is required")
	}
	p, err := plan.Load(*file)
	if err != nil {
		return err
	}
	signer, who, err := sf.signer()
	if err != nil {
		return err
	}
	cfg, reg, err := a.registry()
	if err != nil {
		return err
	}
	defer reg.Close()
	c, ns, err := a.dial()
	if err != nil {
		return err
	}
	defer c.Close()

	run, err := release.Start(ctx, c, reg, release.StartOptions{
		Plan: p, PlanDir: filepath.Dir(*file), Version: *version, StartedBy: who, TaskQueue: cfg.TaskQueue, Signer: signer,
		ReportURL: cfg.ReportURL,
	})
	if err != nil {
		return err
	}
	headline := "started the release of model " + p.Model
	if desc, err := c.DescribeWorkflow(ctx, run.GetID(), run.GetRunID()); err == nil {
		if s, err := desc.GetStaticSummary(); err == nil && s != "" {
			headline = "started " + s
		}
	}
	fmt.Fprint(a.stdout, startedText(headline, p, run.GetID(), run.GetRunID(), release.WebUIURL(cfg.WebUIURL, ns, run.GetID())))
	// Started is not begun: say so when no worker takes it soon, and why.
	if err := release.Begun(ctx, c, p.Model, release.BeginBound); err != nil {
		fmt.Fprintln(a.stderr, "mlrelease: warning: "+err.Error())
	}
	return nil
}

func (a *app) status(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	output := fs.String("o", "text", "output format: text or json")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("-o %q: want text or json", *output)
	}
	c, _, err := a.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := release.GetStatus(ctx, c, pos[0])
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprint(a.stdout, statusText(st))
	return nil
}

func (a *app) watch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	every := fs.Duration("every", 2*time.Second, "how often to poll the release")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *every <= 0 {
		return usagef("--every %s: want a positive duration", *every)
	}
	model := pos[0]
	c, _, err := a.dial()
	if err != nil {
		return err
	}
	defer c.Close()

	fmt.Fprintf(a.stdout, "watching %s (Ctrl-C stops watching; the release goes on)\n", workflows.WorkflowID(model))
	seen := 0
	final, err := release.Watch(ctx, c, model, *every, func(st workflows.Status) {
		fmt.Fprintln(a.stdout, watchLine(st))
		for ; seen < len(st.Decisions); seen++ {
			fmt.Fprintln(a.stdout, "  "+decisionText(st.Decisions[seen]))
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, outcomeText(final))
	if final.Stage == workflows.StageRolledBack {
		return errRolledBack
	}
	return nil
}

func (a *app) list(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	pos, err := parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	model := ""
	if len(pos) == 1 {
		model = pos[0]
	}
	c, _, err := a.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	rs, err := release.List(ctx, c, model)
	if err != nil {
		return err
	}
	return listText(a.stdout, rs, model)
}

// decide is the command for one kind of decision.
func decide(kind string) func(a *app, ctx context.Context, args []string) error {
	return func(a *app, ctx context.Context, args []string) error {
		fs := flag.NewFlagSet(kind, flag.ContinueOnError)
		comment := fs.String("comment", "", "why (required to reject or abort)")
		viaSignal := fs.Bool("signal", false, "send a signal instead of an update: needs no running worker, but a refusal only shows in status")
		sf := addSigningFlags(fs, "the decision")
		pos, err := parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		if (kind == workflows.Reject || kind == workflows.Abort) && strings.TrimSpace(*comment) == "" {
			return usagef("--comment is required: say why you %s", kind)
		}
		signer, who, err := sf.signer()
		if err != nil {
			return err
		}
		c, _, err := a.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		model := pos[0]
		req := workflows.DecisionRequest{Who: who, Comment: *comment, Source: "cli"}
		if signer != nil {
			run, err := release.ReleaseRun(ctx, c, model)
			if err != nil {
				return err
			}
			if err := signer.SignDecision(&req, workflows.WorkflowID(model), run, kind); err != nil {
				return err
			}
		}
		d, err := release.Decide(ctx, c, model, kind, req, *viaSignal)
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, decidedText(model, d))
		return nil
	}
}

func (a *app) register(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "where the version is served (http or https URL)")
	var aliases listFlag
	fs.Var(&aliases, "alias", "point this alias at the version (repeatable), e.g. champion")
	meta := mapFlag{}
	fs.Var(meta, "meta", "metadata key=value (repeatable)")
	ifAbsent := fs.Bool("if-absent", false, "change nothing when the version is registered already (a setup step run at every start)")
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	if err := checkEndpoint(*endpoint); err != nil {
		return err
	}
	cfg, err := a.settings()
	if err != nil {
		return err
	}
	if cfg.Registry == registry.KindMLflow {
		return fmt.Errorf("MLRELEASE_REGISTRY=mlflow: register versions in MLflow (mlflow.register_model) and set their %s tag to the serving URL", registry.TagEndpoint)
	}
	reg, err := openRegistry(cfg.RegistryPath, true)
	if err != nil {
		return err
	}
	defer reg.Close()
	v := registry.Version{Model: pos[0], Version: pos[1], Endpoint: *endpoint, Metadata: meta, Aliases: aliases}
	if *ifAbsent {
		if have, err := reg.GetVersion(ctx, v.Model, v.Version); err == nil {
			fmt.Fprintf(a.stdout, "%s %s is registered already (at %s); unchanged\n", have.Model, have.Version, have.Endpoint)
			return nil
		} else if !errors.Is(err, registry.ErrNotFound) {
			return err
		}
	}
	if err := reg.RegisterVersion(ctx, v); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "registered %s %s at %s", v.Model, v.Version, v.Endpoint)
	if len(aliases) > 0 {
		fmt.Fprintf(a.stdout, " (aliases: %s)", strings.Join(aliases, ", "))
	}
	fmt.Fprintf(a.stdout, " in %s\n", cfg.RegistryPath)
	return nil
}

// route makes the gateway serve a model it has no route for, from the registry's
// champion; existing routes stay as they are.
func (a *app) route(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	cfg, reg, err := a.registry()
	if err != nil {
		return err
	}
	defer reg.Close()
	routes, set, err := release.EnsureRoute(ctx, reg, deploy.NewGateway(cfg.GatewayURL, cfg.GatewayAdminToken, nil), pos[0])
	if err != nil {
		return err
	}
	if set {
		fmt.Fprintf(a.stdout, "%s: the gateway now sends all traffic to champion %s at %s\n", pos[0], routes.Champion.Version, routes.Champion.URL)
		return nil
	}
	fmt.Fprintf(a.stdout, "%s: the gateway has routes already (champion %s", pos[0], routes.Champion.Version)
	if routes.Candidate != nil {
		fmt.Fprintf(a.stdout, ", candidate %s at %d%%", routes.Candidate.Version, routes.CandidateWeight)
	}
	fmt.Fprintln(a.stdout, "); unchanged")
	return nil
}

func checkEndpoint(s string) error {
	if s == "" {
		return usagef("--endpoint URL is required")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--endpoint %q: want an http or https URL such as http://127.0.0.1:8001", s)
	}
	return nil
}

// openRegistry opens the local SQLite registry. Only register creates it: anywhere
// else a missing file means the wrong directory or MLRELEASE_REGISTRY_PATH.
func openRegistry(path string, create bool) (*registry.SQLite, error) {
	if !create {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no registry at %s (MLRELEASE_REGISTRY_PATH): register versions first with `mlrelease register MODEL VERSION --endpoint URL`", path)
		}
	}
	return registry.OpenSQLite(path)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// mapFlag is a repeatable key=value flag.
type mapFlag map[string]string

func (m mapFlag) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func (m mapFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("%q: want key=value", s)
	}
	m[strings.TrimSpace(k)] = v
	return nil
}

// startedText tells what started and what to run next.
func startedText(headline string, p *plan.Plan, id, runID, webURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", headline)
	fmt.Fprintf(&b, "  workflow  %s (run %s)\n", id, runID)
	fmt.Fprintf(&b, "  web UI    %s\n", webURL)
	fmt.Fprintf(&b, "  watch     mlrelease watch %s\n", p.Model)
	switch ap := p.Approval; {
	case ap.Required:
		fmt.Fprintf(&b, "  approve   mlrelease approve %s   (approvers: %s)\n", p.Model, strings.Join(ap.Approvers, ", "))
	case ap.Waits():
		fmt.Fprintf(&b, "  approve   mlrelease approve %s   (or it promotes itself %s after the canary)\n", p.Model, ap.Timeout)
	default:
		fmt.Fprintf(&b, "  approve   not needed: it promotes itself once every gate passes\n")
	}
	fmt.Fprintf(&b, "  abort     mlrelease abort %s --comment \"why\"\n", p.Model)
	return b.String()
}
