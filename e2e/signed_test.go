package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/workflows"
)

// TestSignedDecisions is issue 12's acceptance on the real dev server, worker and
// Temporal CLI: the forged update from the issue, an unsigned decision, an unlisted
// key, a signature for another run, a tampered comment, an expired signature, the
// starter's own key under four eyes and a replayed signature are each refused,
// change nothing, and are logged and counted by the worker; two valid signed
// approvals (one through the SDK, one through `temporal workflow update execute`
// with a signed input) promote, with the keys' fingerprints in the registry.
func TestSignedDecisions(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()

	alice, bob, carol, mallory := e2eKey(t, "alice"), e2eKey(t, "bob"), e2eKey(t, "carol"), e2eKey(t, "mallory")
	allowed := filepath.Join(dir, "allowed_signers")
	var lines []string
	for _, k := range []*release.Signer{alice, bob, carol} {
		lines = append(lines, k.Principal+` namespaces="mlrelease" `+string(ssh.MarshalAuthorizedKey(k.Key.PublicKey())))
	}
	require.NoError(t, os.WriteFile(allowed, []byte(strings.Join(lines, "")), 0o600))
	logs := &lockedBuffer{}
	l, err := stack.StartLocal(ctx, stack.LocalOptions{Root: root, Dir: dir, AllowedSigners: allowed,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	require.NoError(t, err, "start the local stack")
	defer l.Close()

	p, err := plan.Parse([]byte(fastPlan))
	require.NoError(t, err)
	p.Approval.Approvers = []string{"alice", "bob", "carol"}
	p.Approval.Quorum = 2
	p.Approval.FourEyes = true
	_, err = release.Start(ctx, l.Temporal, l.Registry, release.StartOptions{Plan: p, PlanDir: filepath.Join(root, "e2e"),
		Version: "2", TaskQueue: l.TaskQueue, Signer: alice})
	require.NoError(t, err)
	wctx, reached := context.WithCancel(ctx)
	_, _ = release.Watch(wctx, l.Temporal, stack.DemoModel, 200*time.Millisecond, func(s workflows.Status) {
		if s.Stage == workflows.StageAwaitingApproval {
			reached()
		}
	})
	require.NoError(t, ctx.Err())
	st, err := release.GetStatus(ctx, l.Temporal, stack.DemoModel)
	require.NoError(t, err)
	require.Equal(t, workflows.StageAwaitingApproval, st.Stage)
	require.Equal(t, alice.Fingerprint(), st.StarterKey, "the start is attributed to alice's key")
	run, err := release.ReleaseRun(ctx, l.Temporal, stack.DemoModel)
	require.NoError(t, err)
	id := workflows.WorkflowID(stack.DemoModel)
	sign := func(s *release.Signer, comment, forRun string) workflows.DecisionRequest {
		req := workflows.DecisionRequest{Comment: comment, Source: "e2e"}
		require.NoError(t, s.SignDecision(&req, id, forRun, workflows.Approve))
		return req
	}
	decide := func(req workflows.DecisionRequest) error {
		_, err := release.Decide(ctx, l.Temporal, stack.DemoModel, workflows.Approve, req, false)
		return err
	}

	// The forged update from the issue, as typed into the Temporal CLI.
	out, err := temporalCLI(ctx, root, l.TemporalAddress, "workflow", "update", "execute", "--workflow-id", id, "--name", "approve",
		"--input", `{"who":"alice","comment":"I am not alice"}`)
	require.Error(t, err, "the forged update is refused: %s", out)
	assert.Contains(t, out, "the decision is not signed")

	refused := []struct {
		name, reason, want string
		req                workflows.DecisionRequest
	}{
		{"unsigned", workflows.RefusedUnsigned, "the decision is not signed", workflows.DecisionRequest{Who: "bob", Comment: "typed"}},
		{"unlisted key", workflows.RefusedUnknownKey, "is not in the release's allowed signers",
			sign(&release.Signer{Key: mallory.Key, Principal: "bob"}, "ship it", run)},
		{"another run", workflows.RefusedOtherRun, "the signature is for release \"0195-another-run\"", sign(bob, "ok", "0195-another-run")},
		{"tampered comment", workflows.RefusedBadSignature, "bad signature", func() workflows.DecisionRequest {
			req := sign(bob, "looks fine", run)
			req.Comment = "looks great"
			return req
		}()},
		{"expired", workflows.RefusedExpired, "the signature expired at", sign(&release.Signer{Key: bob.Key, Principal: "bob",
			Now: func() time.Time { return time.Now().Add(-20 * time.Minute) }}, "old", run)},
		{"the starter's key", workflows.RefusedNotAllowed, "four eyes: key " + alice.Fingerprint() + " started this release", sign(alice, "mine", run)},
	}
	for _, tt := range refused {
		err := decide(tt.req)
		require.ErrorIs(t, err, release.ErrRefused, tt.name)
		assert.Contains(t, err.Error(), tt.want, tt.name)
	}
	st, err = release.GetStatus(ctx, l.Temporal, stack.DemoModel)
	require.NoError(t, err)
	require.Equal(t, workflows.StageAwaitingApproval, st.Stage)
	require.Empty(t, st.Decisions, "no refused attempt changed the release")

	// bob's valid approval counts once; the same signed request again is a replay.
	bobs := sign(bob, "metrics look right", run)
	require.NoError(t, decide(bobs))
	err = decide(bobs)
	require.ErrorIs(t, err, release.ErrRefused)
	assert.Contains(t, err.Error(), "replayed: this signed decision")
	st, err = release.GetStatus(ctx, l.Temporal, stack.DemoModel)
	require.NoError(t, err)
	require.Len(t, st.Decisions, 1)
	assert.Equal(t, bob.Fingerprint(), st.Decisions[0].Key)

	// Each refusal is counted on the worker's /metrics and logged with its reason.
	counts := refusedCounts(t, l.WorkerMetricsURL)
	for reason, n := range map[string]float64{workflows.RefusedUnsigned: 2, workflows.RefusedUnknownKey: 1, workflows.RefusedOtherRun: 1,
		workflows.RefusedBadSignature: 1, workflows.RefusedExpired: 1, workflows.RefusedNotAllowed: 1, workflows.RefusedReplayed: 1} {
		assert.GreaterOrEqual(t, counts[reason], n, "mlrelease_decisions_refused_total{reason=%q}", reason)
	}
	logged := logs.String()
	for _, reason := range []string{"unsigned", "unknown_key", "other_run", "bad_signature", "expired", "not_allowed", "replayed"} {
		assert.Contains(t, logged, `"reason":"`+reason+`"`, "the worker logs a refusal for %s", reason)
	}

	// carol approves through the Temporal CLI with a signed input, as `mlrelease sign`
	// prints it: the quorum is met and the release is promoted.
	input, err := json.Marshal(sign(carol, "agreed", run))
	require.NoError(t, err)
	out, err = temporalCLI(ctx, root, l.TemporalAddress, "workflow", "update", "execute", "--workflow-id", id, "--name", "approve",
		"--input", string(input))
	require.NoError(t, err, "temporal workflow update execute with a signed input: %s", out)
	res := signedResult(ctx, t, l)
	require.Equal(t, workflows.OutcomePromoted, res.Outcome, "reason: %s", res.Reason)
	assert.Equal(t, "every gate passed; approved by bob, carol", res.Reason)
	v2, err := l.Registry.GetVersion(ctx, stack.DemoModel, "2")
	require.NoError(t, err)
	assert.Equal(t, bob.Fingerprint()+", "+carol.Fingerprint(), v2.Tags[workflows.TagApproverKey])
	assert.Equal(t, workflows.ModeSigned, v2.Tags[workflows.TagSigning])
	recordHistory(t, l, "release_signed_four_eyes.json")
}

func e2eKey(t *testing.T, principal string) *release.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	k, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return &release.Signer{Key: k, Principal: principal}
}

func temporalCLI(ctx context.Context, root, address string, args ...string) (string, error) {
	cli, err := stack.Find(root, "temporal")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, cli, append(args, "--address", address, "--namespace", "default")...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// refusedCounts reads mlrelease_decisions_refused_total from /metrics, by reason.
func refusedCounts(t *testing.T, url string) map[string]float64 {
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	counts := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, workflows.MetricRefused+"{") {
			continue
		}
		labels, value, _ := strings.Cut(line, "} ")
		_, reason, _ := strings.Cut(labels, `reason="`)
		reason, _, _ = strings.Cut(reason, `"`)
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		require.NoError(t, err, line)
		counts[reason] += v
	}
	return counts
}

func signedResult(ctx context.Context, t *testing.T, l *stack.Local) workflows.Result {
	var res workflows.Result
	require.NoError(t, l.Temporal.GetWorkflow(ctx, workflows.WorkflowID(stack.DemoModel), "").Get(ctx, &res))
	return res
}

// lockedBuffer collects the worker's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
