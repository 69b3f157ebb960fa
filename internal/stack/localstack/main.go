// Command localstack is `make run`: it starts the Temporal dev server with its Web UI,
// Prometheus, the gateway, the demo model servers, the load generator and the worker
// as child processes, registers the demo versions, starts a release of the demo model
// and follows it until Ctrl-C, which stops everything it started.
//
// State lives in .mlrelease/ (the dev server's database, the registry, Prometheus's
// data, the logs), so a second run is up in seconds and a release still running from
// the last one resumes where it was.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/workflows"
)

// Fixed local ports, as the README lists them.
const (
	temporalPort   = 7233
	webUIPort      = 8233
	prometheusAddr = "127.0.0.1:9090"
	gatewayAddr    = "127.0.0.1:8080"
	workerAddr     = "127.0.0.1:8090"
	planFile       = "examples/plans/demo.yaml"
)

func main() {
	// SIGHUP too: closing the terminal stops the stack, not only its supervisor.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root, err := stack.Root()
	if err != nil {
		return err
	}
	state := filepath.Join(root, ".mlrelease")
	pidFile := filepath.Join(state, "stack.pids")
	// A stack an earlier make run left running (its supervisor killed) is stopped.
	if left, err := stack.StopLeftover(pidFile, 10*time.Second); err != nil {
		return fmt.Errorf("stop the stack an earlier make run left (%s): %w", pidFile, err)
	} else if len(left) > 0 {
		fmt.Printf("stopped %d processes an earlier make run left running\n", len(left))
	}
	s := &stack.Stack{LogDir: filepath.Join(state, "logs"), PIDFile: pidFile}
	defer func() {
		fmt.Println("\nstopping the local stack")
		s.Stop()
	}()
	bin := func(name string) (string, error) { return stack.Find(root, name) }
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", temporalPort), fmt.Sprintf("127.0.0.1:%d", webUIPort), prometheusAddr, gatewayAddr, workerAddr} {
		if stack.InUse(addr) {
			return fmt.Errorf("%s is in use: stop what listens there (another make run?) and try again", addr)
		}
	}
	token := randomToken()
	// Demo keys for alice and bob; the worker trusts them (signed decisions).
	allowedSigners, people, err := demoKeys(state)
	if err != nil {
		return err
	}
	up := func(name, program string, args []string, ready func(*stack.Proc) error, env ...string) error {
		p, err := bin(program)
		if err != nil {
			return err
		}
		proc, err := s.Start(name, p, args, env...)
		if err != nil {
			return err
		}
		if err := ready(proc); err != nil {
			return err
		}
		fmt.Printf("  %-12s up (log: %s)\n", name, rel(root, proc.Log))
		return nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	httpReady := func(url string) func(*stack.Proc) error {
		return func(p *stack.Proc) error { return stack.WaitReady(waitCtx, p, url) }
	}
	fmt.Println("starting the local stack (state in .mlrelease/)")

	// Step 1: the Temporal dev server and its Web UI.
	if err := up("temporal", "temporal", stack.TemporalArgs(filepath.Join(state, "temporal.db"), temporalPort, webUIPort),
		httpReady(fmt.Sprintf("http://127.0.0.1:%d/", webUIPort))); err != nil {
		return err
	}
	// Step 2: the demo model servers.
	endpoints := map[string]string{}
	for i, v := range stack.DemoVersions {
		addr := fmt.Sprintf("127.0.0.1:%d", 8101+i)
		endpoints[v.Version] = "http://" + addr
		args := []string{"-listen", addr, "-model", filepath.Join(root, v.Weights), "-version", v.Version, "-error-rate", fmt.Sprint(v.ErrorRate)}
		if err := up("model-v"+v.Version, "modelserver", args, httpReady(endpoints[v.Version]+"/ping")); err != nil {
			return err
		}
	}
	// Step 3: the gateway, and Prometheus scraping it and the worker.
	if err := up("gateway", "gateway", nil, httpReady("http://"+gatewayAddr+"/readyz"),
		"MLRELEASE_GATEWAY_LISTEN="+gatewayAddr, "MLRELEASE_GATEWAY_ADMIN_TOKEN="+token,
		// Routes survive a restart of the gateway (and of make run) in this file.
		"MLRELEASE_GATEWAY_STATE_FILE="+filepath.Join(state, "gateway-state.json")); err != nil {
		return err
	}
	pp, err := s.StartPrometheus(waitCtx, root, filepath.Join(state, "prometheus"), prometheusAddr, 2*time.Second,
		map[string]string{"gateway": gatewayAddr, "worker": workerAddr})
	if err != nil {
		return err
	}
	fmt.Printf("  %-12s up (log: %s)\n", "prometheus", rel(root, pp.Log))

	// Step 4: the registry with the demo versions, and the champion's routes.
	reg, err := registry.OpenSQLite(filepath.Join(state, "registry.db"))
	if err != nil {
		return err
	}
	defer reg.Close()
	c, err := client.DialContext(ctx, client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", temporalPort),
		Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		return err
	}
	defer c.Close()
	gw := deploy.NewGateway("http://"+gatewayAddr, token, nil)
	running, err := releaseRunning(ctx, c)
	if err != nil {
		return err
	}
	if !running {
		// A fresh demo: version 1 is the champion again.
		if err := stack.RegisterDemo(ctx, reg, endpoints); err != nil {
			return err
		}
		if _, err := gw.Apply(ctx, deploy.Traffic{Model: stack.DemoModel, Champion: deploy.Backend{Version: "1", URL: endpoints["1"]}}); err != nil {
			return err
		}
	}

	// Step 5: the load generator and the worker.
	if err := up("loadgen", "loadgen", []string{"-url", "http://" + gatewayAddr + "/models/" + stack.DemoModel + "/invocations",
		"-data", filepath.Join(root, "examples/demo/data/eval.csv"), "-rate", "20"}, func(*stack.Proc) error { return nil }); err != nil {
		return err
	}
	if err := up("worker", "worker", nil, httpReady("http://"+workerAddr+"/healthz"),
		"TEMPORAL_ADDRESS="+fmt.Sprintf("127.0.0.1:%d", temporalPort), "TEMPORAL_NAMESPACE=default",
		"MLRELEASE_REGISTRY_PATH="+filepath.Join(state, "registry.db"), "MLRELEASE_GATEWAY_URL=http://"+gatewayAddr,
		"MLRELEASE_GATEWAY_ADMIN_TOKEN="+token, "MLRELEASE_PROMETHEUS_URL=http://"+prometheusAddr, "MLRELEASE_WORKER_LISTEN="+workerAddr,
		"MLRELEASE_ALLOWED_SIGNERS="+allowedSigners); err != nil {
		return err
	}

	// Step 6: the release.
	webUI := fmt.Sprintf("http://localhost:%d", webUIPort)
	if running {
		fmt.Println("\na release of the demo model was still running: it resumes where it was")
	} else {
		p, err := plan.Load(filepath.Join(root, planFile))
		if err != nil {
			return err
		}
		if _, err := release.Start(ctx, c, reg, release.StartOptions{Plan: p, PlanDir: filepath.Join(root, filepath.Dir(planFile)),
			StartedBy: startedBy(), TaskQueue: workflows.TaskQueue, Signer: people["alice"], ReportURL: "http://" + workerAddr}); err != nil {
			return err
		}
		fmt.Printf("\nstarted a release of model %s, version 2 against champion 1 (%s)\n", stack.DemoModel, planFile)
	}
	fmt.Printf(`
  Web UI:      %s
  release:     %s
  report:      %s
  Prometheus:  http://%s
  watch it:    bin/mlrelease watch %s
  approve it:  bin/mlrelease approve %s --as bob --key .mlrelease/keys/bob --comment "looks good"
               (it waits for approval after the canary steps, about 3 minutes in;
               alice started it with her key .mlrelease/keys/alice, bob approves with his)
  or reject:   bin/mlrelease reject %s --as bob --key .mlrelease/keys/bob --comment "not yet"
  a forged approval is refused (no signature):
               bin/temporal workflow update execute --workflow-id release/wine --name approve --input '{"who":"alice"}'
  a signed input for the Web UI's Send an Update or the Temporal CLI:
               bin/mlrelease sign approve wine --as bob --key .mlrelease/keys/bob --comment "looks good"
  try a bad one afterwards: bin/mlrelease start -f %s --version 3 --as alice --key .mlrelease/keys/alice

Ctrl-C stops everything.
`, webUI, release.WebUIURL(webUI, "default", workflows.WorkflowID(stack.DemoModel)), release.ReportLink("http://"+workerAddr, stack.DemoModel), prometheusAddr,
		stack.DemoModel, stack.DemoModel, stack.DemoModel, planFile)

	last := ""
	_, err = release.Watch(ctx, c, stack.DemoModel, time.Second, func(st workflows.Status) {
		line := fmt.Sprintf("stage %-17s candidate %3d%%  shadow %3d%%", st.Stage, st.CandidateWeight, st.ShadowShare)
		if st.Outcome != "" {
			line += "  " + st.Outcome + ": " + st.Reason
		}
		if line != last {
			fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), line)
			last = line
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		fmt.Println("release ended:", err)
	}
	fmt.Println("\nthe stack stays up for more releases; Ctrl-C stops it")
	<-ctx.Done()
	return nil
}

// releaseRunning reports whether a release of the demo model is still running from
// the last run. It asks the server, so it needs no worker.
func releaseRunning(ctx context.Context, c client.Client) (bool, error) {
	d, err := c.DescribeWorkflowExecution(ctx, workflows.WorkflowID(stack.DemoModel), "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func startedBy() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "make-run"
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}
