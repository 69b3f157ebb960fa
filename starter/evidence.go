package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mlrelease/mlrelease/internal/release"
)

func init() {
	commands["evidence"] = command{"MODEL [--release FIRST_RUN_ID] [-o text|json]",
		"every analysis round of the model's latest release in full, from the registry's audit log", (*app).evidence}
}

func (a *app) evidence(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("evidence", flag.ContinueOnError)
	output := fs.String("o", "text", "output format: text or json")
	run := fs.String("release", "", "the release's first run ID (default: the model's latest release)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("-o %q: want text or json", *output)
	}
	_, reg, err := a.registry()
	if err != nil {
		return err
	}
	defer reg.Close()
	ev, err := release.GetEvidence(ctx, reg, pos[0], *run)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ev)
	}
	evidenceText(a.stdout, ev)
	return nil
}

// evidenceText prints one line a round and one a measurement.
func evidenceText(w io.Writer, ev release.Evidence) {
	fmt.Fprintf(w, "%s (first run %s): %d analysis rounds\n", ev.ReleaseID, ev.FirstRunID, len(ev.Rounds))
	for _, rd := range ev.Rounds {
		step := ""
		if rd.Step > 0 {
			step = fmt.Sprintf(" step %d", rd.Step)
		}
		fmt.Fprintf(w, "round %d  %s  %s%s at %d%%\n", rd.Round, rd.At.UTC().Format("2006-01-02 15:04:05"), rd.Stage, step, rd.Weight)
		for _, m := range rd.Measurements {
			line := fmt.Sprintf("  %-24s %-5s candidate %s, champion %s: %s", m.Metric, m.Verdict, value(m.Value), value(m.Baseline), m.Message)
			fmt.Fprintln(w, strings.TrimRight(line, " :"))
		}
	}
}
