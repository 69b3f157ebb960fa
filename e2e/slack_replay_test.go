package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/release"
	mlslack "github.com/mlrelease/mlrelease/internal/slack"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/worker/host"
	"github.com/mlrelease/mlrelease/workflows"
)

const slackSecret = "e2e-slack-signing-secret"

// TestSlackClickReplayedAfterRestart: a Slack click taken by one worker, replayed
// (Slack's signature still fresh) to a second replica and then to a restarted
// worker, neither of which has seen it: each answers Slack 200, and the release
// refuses the replay (the bridge signs the same click into the same signed decision),
// counted on /metrics; nothing changes until another approver clicks.
func TestSlackClickReplayedAfterRestart(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	fake := slacktest.NewTestServer()
	fake.Start()
	defer fake.Stop()
	bridgeKey := filepath.Join(dir, "bridge")
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "bridge")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bridgeKey, pem.EncodeToMemory(block), 0o600))

	logs := &lockedBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	l, err := stack.StartLocal(ctx, stack.LocalOptions{Root: root, Dir: dir, Logger: logger,
		Slack: config.Slack{BotToken: "xoxb-e2e", Channel: "C0RELEASES", SigningSecret: slackSecret, APIURL: fake.GetAPIURL(), BridgeKey: bridgeKey}})
	require.NoError(t, err, "start the local stack")
	defer l.Close()

	p, err := plan.Parse([]byte(fastPlan))
	require.NoError(t, err)
	p.Approval.Approvers = []string{"U0ALICE", "U0BOB"}
	p.Approval.Quorum = 2
	_, err = release.Start(ctx, l.Temporal, l.Registry, release.StartOptions{Plan: p, PlanDir: filepath.Join(root, "e2e"),
		Version: "2", StartedBy: "e2e", TaskQueue: l.TaskQueue})
	require.NoError(t, err)
	wctx, reached := context.WithCancel(ctx)
	_, _ = release.Watch(wctx, l.Temporal, stack.DemoModel, 200*time.Millisecond, func(s workflows.Status) {
		if s.Stage == workflows.StageAwaitingApproval {
			reached()
		}
	})
	require.NoError(t, ctx.Err())

	first := strings.TrimSuffix(l.WorkerMetricsURL, "/metrics")
	// One click, replayed byte for byte (Slack's timestamp and signature included).
	clicked := time.Now()
	alice := slackClick("U0ALICE", clicked)
	require.Equal(t, http.StatusOK, postClick(t, first, alice, clicked))
	status := func() workflows.Status {
		st, err := release.GetStatus(ctx, l.Temporal, stack.DemoModel)
		require.NoError(t, err)
		return st
	}
	require.Eventually(t, func() bool { return len(status().Decisions) == 1 }, time.Minute, 100*time.Millisecond, "alice's click is taken")
	d := status().Decisions[0]
	require.Equal(t, "U0ALICE", d.Who)
	require.Equal(t, "slack:U0ALICE", d.Signer)

	// A second replica, and then the same replica restarted: neither has seen the click.
	replica := func(name string) (string, context.CancelFunc, chan error) {
		cfg := l.Config
		cfg.Listen = "127.0.0.1:0"
		rctx, stop := context.WithCancel(ctx)
		ready := make(chan string, 1)
		done := make(chan error, 1)
		go func() {
			done <- host.Run(rctx, cfg, client.Options{HostPort: l.TemporalAddress, Namespace: "default"}, logger.With("replica", name), ready)
		}()
		select {
		case addr := <-ready:
			return "http://" + addr, stop, done
		case err := <-done:
			t.Fatalf("replica %s stopped at start: %v", name, err)
		}
		return "", stop, done
	}
	replayed := func(urls ...string) float64 {
		n := 0.0
		for _, u := range urls {
			n += refusedCounts(t, u+"/metrics")[workflows.RefusedReplayed]
		}
		return n
	}
	second, stopSecond, secondDone := replica("b")
	require.Equal(t, http.StatusOK, postClick(t, second, alice, clicked), "the second replica checks Slack's signature, not its memory")
	require.Eventually(t, func() bool { return replayed(first, second) >= 1 }, time.Minute, 100*time.Millisecond,
		"the release refuses the replay, counted on the worker that ran the validator")
	stopSecond()
	require.NoError(t, <-secondDone)
	before := replayed(first)

	restarted, stopRestarted, restartedDone := replica("b-restarted")
	defer func() { stopRestarted(); <-restartedDone }()
	require.Equal(t, http.StatusOK, postClick(t, restarted, alice, clicked))
	require.Eventually(t, func() bool { return replayed(first, restarted) >= before+1 }, time.Minute, 100*time.Millisecond,
		"refused again after the restart")
	st := status()
	require.Equal(t, workflows.StageAwaitingApproval, st.Stage)
	require.Len(t, st.Decisions, 1, "the replays changed nothing")
	require.Contains(t, logs.String(), `"reason":"replayed"`, "the refusal is logged")

	// Another approver's click completes the quorum.
	require.Equal(t, http.StatusOK, postClick(t, restarted, slackClick("U0BOB", time.Now()), time.Now()))
	res := signedResult(ctx, t, l)
	require.Equal(t, workflows.OutcomePromoted, res.Outcome, "reason: %s", res.Reason)
	require.Equal(t, "every gate passed; approved by U0ALICE, U0BOB", res.Reason)
}

// slackClick is a block_actions payload: user clicks Approve on the demo's request.
func slackClick(user string, at time.Time) string {
	value := `{"model":"` + stack.DemoModel + `"}`
	return fmt.Sprintf(`{"type":"block_actions","team":{"id":"T0E2E"},"user":{"id":%q,"name":%q},
	"container":{"type":"message","channel_id":"C0RELEASES","message_ts":"1700000000.000100"},"channel":{"id":"C0RELEASES"},
	"message":{"type":"message","ts":"1700000000.000100","text":"Approval needed"},
	"actions":[{"type":"button","action_id":%q,"block_id":"decide","value":%q,"action_ts":"%d.000200"}]}`,
		user, strings.ToLower(user), mlslack.ActionApprove, value, at.Unix())
}

// postClick posts payload to the worker's interaction endpoint, signed as Slack does.
func postClick(t *testing.T, base, payload string, at time.Time) int {
	body := "payload=" + url.QueryEscape(payload)
	stamp := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(slackSecret))
	fmt.Fprintf(mac, "v0:%s:%s", stamp, body)
	req, err := http.NewRequest(http.MethodPost, base+host.SlackInteractionsPath, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", stamp)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}
