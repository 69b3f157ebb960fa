// Command mlrelease starts, follows and decides controlled releases of ML models:
// each release is a durable Temporal workflow (see workflows.ReleaseWorkflow). It reads
// Temporal's connection settings like the Temporal CLI (TEMPORAL_ADDRESS,
// TEMPORAL_NAMESPACE, profiles) and its own from MLRELEASE_* variables.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	tlog "go.temporal.io/sdk/log"

	"github.com/mlrelease/mlrelease/internal/config"
)

// Exit codes.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitRolledBack  = 3 // watch: the release ended rolled back
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := &app{stdout: os.Stdout, stderr: os.Stderr, dial: dial, settings: settings}
	os.Exit(app.run(ctx, os.Args[1:]))
}

// app is one invocation: where it writes and how it reaches Temporal and its settings.
// Tests replace dial and settings.
type app struct {
	stdout, stderr io.Writer
	// dial connects to Temporal and returns the client and its namespace.
	dial     func() (client.Client, string, error)
	settings func() (config.Worker, error)
}

// command is one subcommand.
type command struct {
	args    string // after the name, for usage
	summary string
	run     func(a *app, ctx context.Context, args []string) error
}

var commands = map[string]command{}

// order is how help lists the commands.
var order = []string{"start", "status", "watch", "list", "approve", "reject", "pause", "resume", "abort", "sign", "register", "route", "evidence", "report", "keys"}

func init() {
	commands["start"] = command{"-f plan.yaml [--version V] [--as WHO] [--key FILE | --unsigned]", "check the plan and the registry, then start the release", (*app).start}
	commands["status"] = command{"MODEL [-o text|json]", "where the model's release is, with its gates, analyses and decisions", (*app).status}
	commands["watch"] = command{"MODEL [--every 2s]", "follow the release until it ends (exit 0 promoted, 3 rolled back)", (*app).watch}
	commands["list"] = command{"[MODEL]", "releases, newest first", (*app).list}
	commands["approve"] = command{"MODEL [--comment C] [--as WHO] [--key FILE | --unsigned] [--signal]", "approve the release awaiting approval", decide("approve")}
	commands["reject"] = command{"MODEL --comment C [--as WHO] [--key FILE | --unsigned] [--signal]", "reject the release: it rolls back", decide("reject")}
	commands["pause"] = command{"MODEL [--comment C] [--as WHO] [--key FILE | --unsigned] [--signal]", "hold the shadow or canary stage at its current traffic", decide("pause")}
	commands["resume"] = command{"MODEL [--comment C] [--as WHO] [--key FILE | --unsigned] [--signal]", "resume a paused release", decide("resume")}
	commands["abort"] = command{"MODEL --comment C [--as WHO] [--key FILE | --unsigned] [--signal]", "abort the release at any stage: it rolls back", decide("abort")}
	commands["sign"] = command{"DECISION MODEL [--comment C] [--as WHO] [--key FILE] [--ttl 10m] [--release RUN]",
		"print a signed decision: the --input of `temporal workflow update execute`, or the Web UI's Send an Update", (*app).sign}
	commands["register"] = command{"MODEL VERSION --endpoint URL [--alias champion] [--meta k=v ...] [--if-absent]", "add a version to the local registry", (*app).register}
	commands["report"] = command{"MODEL [-o FILE] [--run RUN] | --history FILE [-o FILE]", "the release as one HTML page: outcome, timeline, every metric against the champion with its evidence, decisions", (*app).report}
	commands["keys"] = command{"DIR NAME...", "make demo signing keys DIR/NAME and DIR/allowed_signers trusting them (kept when there)", (*app).keys}
	commands["route"] = command{"MODEL", "make the gateway serve a model it has no route for, from its champion (existing routes stay)", (*app).route}
}

const usageFooter = `Temporal connection: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_PROFILE and the
other TEMPORAL_* settings, as for the Temporal CLI.
mlrelease settings: MLRELEASE_TASK_QUEUE, MLRELEASE_REGISTRY_PATH, MLRELEASE_WEB_UI_URL.
Decisions are updates (they wait for the release to accept or refuse them); --signal
sends a signal instead, which needs no running worker. Decisions and starts are signed
with your SSH key (--key FILE, MLRELEASE_SIGNING_KEY, or the one key in ssh-agent) as
--as NAME (default: your OS user), the name the release's allowed signers give your key.

Exit codes: 0 ok (watch: promoted), 1 error, 2 usage, 3 watch: rolled back.
`

func usage(w io.Writer) {
	fmt.Fprint(w, "mlrelease: controlled releases of ML models on Temporal.\n\nUsage:\n")
	for _, name := range order {
		fmt.Fprintf(w, "  mlrelease %s %s\n      %s\n", name, commands[name].args, commands[name].summary)
	}
	fmt.Fprint(w, "  mlrelease help [COMMAND]\n\n", usageFooter)
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errRolledBack ends watch with exitRolledBack; watch has printed why.
var errRolledBack = errors.New("rolled back")

func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		usage(a.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if _, ok := commands[rest[0]]; ok {
				return a.run(ctx, []string{rest[0], "-h"})
			}
			printError(a.stderr, fmt.Errorf("unknown command %q: see `mlrelease help`", rest[0]))
			return exitUsage
		}
		usage(a.stdout)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		printError(a.stderr, fmt.Errorf("unknown command %q: see `mlrelease help`", name))
		return exitUsage
	}
	err := cmd.run(a, ctx, rest)
	var ue *usageError
	var help *helpError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &help):
		fmt.Fprintf(a.stdout, "Usage: mlrelease %s %s\n  %s\n\nFlags:\n", name, cmd.args, cmd.summary)
		help.fs.SetOutput(a.stdout)
		help.fs.PrintDefaults()
		return exitOK
	case errors.Is(err, errRolledBack):
		return exitRolledBack
	case errors.As(err, &ue):
		printError(a.stderr, fmt.Errorf("%s: %w (usage: mlrelease %s %s)", name, err, name, cmd.args))
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		printError(a.stderr, errors.New("interrupted"))
		return exitInterrupted
	}
	printError(a.stderr, err)
	return exitError
}

// printError writes err as "mlrelease: ..."; the lines of a joined error (each
// problem of a plan) follow, indented.
func printError(w io.Writer, err error) {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	fmt.Fprintln(w, "mlrelease: "+lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintln(w, "  "+l)
	}
}

// helpError is -h on a command: run prints the command's usage and flags.
type helpError struct{ fs *flag.FlagSet }

func (e *helpError) Error() string { return "help requested" }
func (e *helpError) Unwrap() error { return flag.ErrHelp }

// parse parses flags that may come before, between or after the positional
// arguments, and checks the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpError{fs}
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	switch {
	case len(pos) < min:
		return nil, usagef("missing arguments")
	case len(pos) > max:
		return nil, usagef("unexpected arguments: %s", strings.Join(pos[max:], " "))
	}
	return pos, nil
}

// identity is who acts: --as, or the OS user.
func identity(as string) (string, error) {
	if s := strings.TrimSpace(as); s != "" {
		return s, nil
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, nil
	}
	if s := os.Getenv("USER"); s != "" {
		return s, nil
	}
	return "", errors.New("cannot tell who you are: pass --as NAME")
}

// dial connects with the Temporal CLI's settings (environment and profile).
func dial() (client.Client, string, error) {
	opts, err := envconfig.LoadDefaultClientOptions()
	if err != nil {
		return nil, "", fmt.Errorf("read the Temporal client settings (TEMPORAL_* and the temporal.toml profile): %w", err)
	}
	// The SDK's own log lines would mix with the CLI's output; errors are returned.
	opts.Logger = tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))
	addr := opts.HostPort
	if addr == "" {
		addr = client.DefaultHostPort
	}
	c, err := client.Dial(opts)
	if err != nil {
		return nil, "", fmt.Errorf("connect to Temporal at %s (set TEMPORAL_ADDRESS, or start a local stack with `make run`): %w", addr, err)
	}
	ns := opts.Namespace
	if ns == "" {
		ns = client.DefaultNamespace
	}
	return c, ns, nil
}

func settings() (config.Worker, error) {
	var cfg config.Worker
	err := config.Load(&cfg)
	return cfg, err
}
