package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/report"
	"github.com/mlrelease/mlrelease/internal/signing"
)

// report writes a release's report: one self-contained HTML page.
func (a *app) report(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	out := fs.String("o", "", "write the page to this file (default: standard output)")
	history := fs.String("history", "", "draw a release from its exported history (temporal workflow show --output json), with no server")
	run := fs.String("run", "", "a run ID of an earlier release of the model (default: its latest release)")
	pos, err := parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	var r report.Release
	switch {
	case *history != "":
		f, err := os.Open(*history)
		if err != nil {
			return err
		}
		defer f.Close()
		if r, err = report.FromHistory(f); err != nil {
			return fmt.Errorf("%s: %w", *history, err)
		}
	case len(pos) == 1:
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
		link := func(id string) string { return release.WebUIURL(cfg.WebUIURL, ns, id) }
		if *run != "" {
			r, err = report.LoadRun(ctx, c, reg, pos[0], *run, link)
		} else {
			r, err = report.Load(ctx, c, reg, pos[0], link)
		}
		if err != nil {
			return err
		}
	default:
		return usagef("name a MODEL, or --history FILE")
	}
	var w io.Writer = a.stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if err := report.Write(w, r); err != nil {
		return err
	}
	if *out != "" {
		fmt.Fprintf(a.stderr, "report of %s written to %s\n", r.Status.ReleaseID, *out)
	}
	return nil
}

// registry reads the settings and opens the configured registry: MLflow's server, or
// the local SQLite file, which must exist (only `register` creates it).
func (a *app) registry() (config.Worker, registry.Registry, error) {
	cfg, err := a.settings()
	if err != nil {
		return cfg, nil, err
	}
	var reg registry.Registry
	if cfg.Registry == registry.KindMLflow {
		reg, err = registry.Open(cfg.Registry, "")
	} else {
		reg, err = openRegistry(cfg.RegistryPath, false)
	}
	return cfg, reg, err
}

// keys makes demo signing keys: DIR/NAME for each name, and DIR/allowed_signers
// trusting them (a worker's MLRELEASE_ALLOWED_SIGNERS). Keys already there are kept.
func (a *app) keys(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	pos, err := parse(fs, args, 2, 100)
	if err != nil {
		return err
	}
	for _, who := range pos[1:] {
		if !signingName.MatchString(who) {
			return usagef("name %q: want letters, digits, '.', '_' or '-'", who)
		}
	}
	allowed := filepath.Join(pos[0], "allowed_signers")
	if _, err := signing.DemoKeys(pos[0], allowed, pos[1:]...); err != nil {
		return err
	}
	for _, who := range pos[1:] {
		fmt.Fprintf(a.stdout, "%s: %s\n", who, filepath.Join(pos[0], who))
	}
	fmt.Fprintf(a.stdout, "trusted by %s (set MLRELEASE_ALLOWED_SIGNERS to it)\n", allowed)
	return nil
}

var signingName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
