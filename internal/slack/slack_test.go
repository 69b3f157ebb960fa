package slack

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/signing"
	"github.com/mlrelease/mlrelease/workflows"
)

// Distinctive secrets: none of them may appear in a release's history or the logs.
const (
	botToken      = "xoxb-SECRET-bot-4f1c77"
	signingSecret = "SECRET-signing-9a7e31"
	appToken      = "xapp-SECRET-app-2b3d55"
	channel       = "C0RELEASES"
)

var secrets = []string{botToken, signingSecret, appToken}

// syncBuffer collects the logs of the worker, notifier and handler.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rig is a worker whose notifier is Slack (the fake), and the click handler.
type rig struct {
	// keys are the CLI users' keys (the plans' allowed signers), bridge the worker's
	// Slack bridge key.
	keys    map[string]*release.Signer
	bridge  ssh.Signer
	slack   *fakeSlack
	cfg     Config
	logs    *syncBuffer
	handler *Handler
	http    *httptest.Server
	queue   string
	reg     *registry.SQLite
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := &rig{slack: newFakeSlack(t), logs: &syncBuffer{}, keys: map[string]*release.Signer{}}
	r.bridge = newKey(t)
	workflows.SetWorkerTrust(workflows.WorkerTrust{SlackBridge: string(ssh.MarshalAuthorizedKey(r.bridge.PublicKey()))})
	t.Cleanup(func() { workflows.SetWorkerTrust(workflows.WorkerTrust{}) })
	logger := slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.cfg = Config{Slack: config.Slack{BotToken: botToken, Channel: channel, SigningSecret: signingSecret, AppToken: appToken,
		APIURL: r.slack.GetAPIURL()}, WebUIURL: "http://localhost:8233", Logger: logger}

	var err error
	r.reg, err = registry.OpenSQLite(filepath.Join(t.TempDir(), "registry.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.reg.Close() })
	notifier, err := NewNotifier(r.cfg)
	require.NoError(t, err)
	wc, err := client.NewClientFromExisting(tc, client.Options{Logger: tlog.NewStructuredLogger(logger)})
	require.NoError(t, err)
	r.queue = "slack-" + t.Name()
	w := worker.New(wc, r.queue, worker.Options{})
	w.RegisterWorkflow(workflows.ReleaseWorkflow)
	rounds := activities.StartRoundClock(wc, logger)
	w.RegisterActivity(&activities.Activities{Registry: r.reg, Deployer: &fakeDeployer{}, Metrics: fakeMetrics{}, Notifier: notifier,
		Rounds: rounds})
	require.NoError(t, w.Start())
	t.Cleanup(rounds.Stop)
	t.Cleanup(w.Stop)

	r.handler, err = NewHandler(ctx, r.cfg, TemporalDecider{Client: tc, Bridge: r.bridge})
	require.NoError(t, err)
	r.http = httptest.NewServer(r.handler)
	t.Cleanup(r.http.Close)
	t.Cleanup(r.handler.Wait)
	for _, u := range [][3]string{{"U0ALICE", "Alice Liddell", "Alice"}, {"U0BOB", "Bob Builder", ""}, {"U0CAROL", "Carol Danvers", "carol"}, {"U0MALLORY", "Mallory M", ""}} {
		r.slack.addUser(u[0], u[1], u[2])
	}
	return r
}

var models atomic.Int64

// start registers versions 1 (champion) and 2 of a new model and starts its release.
func (r *rig) start(t *testing.T, prefix, approval, startedBy string) string {
	t.Helper()
	model := fmt.Sprintf("%s-%d", prefix, models.Add(1))
	for _, v := range []registry.Version{
		{Model: model, Version: "1", Endpoint: "http://127.0.0.1:9001", Aliases: []string{registry.AliasChampion}},
		{Model: model, Version: "2", Endpoint: "http://127.0.0.1:9002", Aliases: []string{registry.AliasChallenger}},
	} {
		require.NoError(t, r.reg.RegisterVersion(context.Background(), v))
	}
	p, err := plan.Parse([]byte(`
model: ` + model + `
canary:
  steps:
    - {weight: 50, bake: 200ms}
analysis:
  interval: 100ms
  metrics:
    - name: error_rate
      query: sum(rate(errors_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}]))
      max: 0.05
approval:
  required: true
  timeout: 1h
` + approval))
	require.NoError(t, err)
	// The starter and alice sign with keys of their own.
	var lines []string
	for _, who := range []string{startedBy, "alice"} {
		lines = append(lines, who+" "+string(ssh.MarshalAuthorizedKey(r.key(t, who).Key.PublicKey())))
	}
	p.Approval.AllowedSigners = filepath.Join(t.TempDir(), "allowed_signers")
	require.NoError(t, os.WriteFile(p.Approval.AllowedSigners, []byte(strings.Join(lines, "")), 0o600))
	_, err = release.Start(context.Background(), tc, r.reg, release.StartOptions{Plan: p, TaskQueue: r.queue, Signer: r.key(t, startedBy)})
	require.NoError(t, err)
	return model
}

// key is who's key, made on first use.
func (r *rig) key(t *testing.T, who string) *release.Signer {
	if r.keys[who] == nil {
		r.keys[who] = &release.Signer{Key: newKey(t), Principal: who}
	}
	return r.keys[who]
}

func newKey(t *testing.T) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return s
}

// approvalRequest waits for the model's approval request and returns its post and
// the Approve button's value.
func (r *rig) approvalRequest(t *testing.T, model string) (call, string) {
	t.Helper()
	c := r.slack.await(t, "approval request of "+model, func(c call) bool {
		return c.Method == "chat.postMessage" && strings.Contains(c.Form.Get("blocks"), ActionApprove) && strings.Contains(c.Form.Get("text"), model+" ")
	})
	var blocks slack.Blocks
	require.NoError(t, json.Unmarshal([]byte(c.Form.Get("blocks")), &blocks))
	for _, b := range blocks.BlockSet {
		if ab, ok := b.(*slack.ActionBlock); ok {
			for _, e := range ab.Elements.ElementSet {
				if btn, ok := e.(*slack.ButtonBlockElement); ok && btn.ActionID == ActionApprove {
					require.NotNil(t, btn.Confirm, "the Approve button asks for confirmation")
					return c, btn.Value
				}
			}
		}
	}
	t.Fatalf("no Approve button in %s", c.Form.Get("blocks"))
	return call{}, ""
}

// ts of the post, as the fake answered it: the nth postMessage has ts n.
func (r *rig) tsOf(t *testing.T, post call) string {
	t.Helper()
	n := 0
	for _, c := range r.slack.recorded() {
		if c.Method == "chat.postMessage" {
			n++
		}
		if c.Method == post.Method && c.Form.Encode() == post.Form.Encode() {
			return fmt.Sprintf("1700000000.%06d", n)
		}
	}
	t.Fatal("post not found")
	return ""
}

var triggers atomic.Int64

// click is the block_actions payload Slack sends when user clicks a button of the
// message at ts.
func click(user, action, value, ts string, blocks string) string {
	n := triggers.Add(1)
	p := fmt.Sprintf(`{"type":"block_actions","trigger_id":"trigger-%d","user":{"id":%q,"username":%q,"name":%q},
	"api_app_id":"A0MLRELEASE","container":{"type":"message","channel_id":%q,"message_ts":%q},"channel":{"id":%q},
	"message":{"type":"message","ts":%q,"text":"Approval needed","blocks":%s},
	"actions":[{"type":"button","action_id":%q,"block_id":%q,"value":%q,"action_ts":"%d.%06d"}]}`,
		n, user, strings.ToLower(user), strings.ToLower(user), channel, ts, channel, ts, blocks, action, blockDecide, value, time.Now().Unix(), n)
	return p
}

// signed is an interaction request as Slack sends it, signed with secret at ts.
func signed(t *testing.T, target, payload, secret string, at time.Time) *http.Request {
	t.Helper()
	body := "payload=" + url.QueryEscape(payload)
	stamp := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:%s", stamp, body)
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", stamp)
	req.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	return req
}

func send(t *testing.T, req *http.Request) int {
	t.Helper()
	// Sent twice (a replay) the body must be read again.
	body, _ := req.GetBody()
	req.Body = body
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	return res.StatusCode
}

func status(t *testing.T, model string) workflows.Status {
	t.Helper()
	st, err := release.GetStatus(context.Background(), tc, model)
	require.NoError(t, err)
	return st
}

func result(t *testing.T, model string) workflows.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res workflows.Result
	require.NoError(t, tc.GetWorkflow(ctx, workflows.WorkflowID(model), "").Get(ctx, &res))
	return res
}

// history is the release's full history as JSON, one event per line.
func history(t *testing.T, model string) string {
	t.Helper()
	var b strings.Builder
	it := tc.GetWorkflowHistory(context.Background(), workflows.WorkflowID(model), "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		j, err := protojson.Marshal(e)
		require.NoError(t, err)
		b.Write(j)
		b.WriteByte('\n')
		// Payloads (inputs, results, details, failures) are base64 in JSON.
		for _, m := range payloadData.FindAllStringSubmatch(string(j), -1) {
			if raw, err := base64.StdEncoding.DecodeString(m[1]); err == nil {
				b.Write(raw)
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

var payloadData = regexp.MustCompile(`"data":\s*"([A-Za-z0-9+/=]+)"`)

func (r *rig) ephemeral(t *testing.T, user, contains string) call {
	t.Helper()
	return r.slack.await(t, "ephemeral to "+user+" saying "+contains, func(c call) bool {
		return c.Method == "chat.postEphemeral" && c.Form.Get("user") == user && strings.Contains(c.Form.Get("text"), contains)
	})
}

// blocksText is a call's blocks with JSON's escapes undone.
func blocksText(c call) string {
	var v any
	if json.Unmarshal([]byte(c.Form.Get("blocks")), &v) != nil {
		return ""
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return b.String()
}

// A release with Slack: its thread, the approval request, forged, stale, replayed
// and unauthorised clicks refused, a valid click recorded with the Slack identity,
// the request and the status line edited, and no secret in history or logs.
func TestHTTPApprovalAndReleaseThread(t *testing.T) {
	r := newRig(t)
	model := r.start(t, "wine-http", "  approvers: [U0ALICE]\n", "carol")
	request, value := r.approvalRequest(t, model)
	requestTS := r.tsOf(t, request)
	blocks := request.Form.Get("blocks")

	// The thread: the opening message with the plan, then every stage under it.
	r.slack.await(t, "canary step update", func(c call) bool {
		return c.Method == "chat.postMessage" && c.Form.Get("text") == model+" canary: canary step 1/1 at 50% passed"
	})
	posts := []call{}
	for _, c := range r.slack.recorded() {
		if c.Method == "chat.postMessage" && strings.Contains(c.Form.Get("text")+c.Form.Get("blocks"), model) {
			posts = append(posts, c)
		}
	}
	require.GreaterOrEqual(t, len(posts), 3)
	opening := posts[0]
	openingTS := r.tsOf(t, opening)
	assert.Equal(t, channel, opening.Form.Get("channel"))
	assert.Empty(t, opening.Form.Get("thread_ts"))
	assert.Contains(t, opening.Form.Get("text"), "Release of "+model+": version 2 against champion 1")
	assert.Contains(t, opening.Form.Get("blocks"), "canary 50%")
	assert.Equal(t, botToken, strings.TrimPrefix(opening.Auth, "Bearer ")+opening.Form.Get("token"), "the bot token authenticates the calls")
	for _, p := range posts[1:] {
		assert.Equal(t, openingTS, p.Form.Get("thread_ts"), "threaded: %s", p.Form.Get("text"))
	}
	assert.Contains(t, methods(posts), "chat.postMessage:"+model+" canary: canary step 1/1 at 50% passed")
	assert.Equal(t, "true", request.Form.Get("reply_broadcast"), "the request also shows in the channel")
	assert.Contains(t, blocks, "candidate 0.01, champion 0.01", "the evidence: canary against champion")
	assert.Contains(t, blocks, "http://localhost:8233/namespaces/default/workflows/release%2F"+model+"/", "a link to the Web UI")
	assert.Contains(t, blocks, ActionReject)

	alice := click("U0ALICE", ActionApprove, value, requestTS, blocks)
	target := r.http.URL
	// Forged (wrong secret), unsigned and stale requests are refused before anything.
	assert.Equal(t, http.StatusUnauthorized, send(t, signed(t, target, alice, "not-the-secret", time.Now())))
	unsigned := signed(t, target, alice, signingSecret, time.Now())
	unsigned.Header.Del("X-Slack-Signature")
	assert.Equal(t, http.StatusUnauthorized, send(t, unsigned))
	assert.Equal(t, http.StatusUnauthorized, send(t, signed(t, target, alice, signingSecret, time.Now().Add(-6*time.Minute))))
	// Alice's signature on a payload changed to Mallory's.
	genuine := signed(t, target, alice, signingSecret, time.Now())
	tampered := signed(t, target, strings.Replace(alice, "U0ALICE", "U0MALLO", 1), "irrelevant", time.Now())
	tampered.Header = genuine.Header.Clone()
	assert.Equal(t, http.StatusUnauthorized, send(t, tampered))

	// Signed but not an approver: refused by the release's validator, explained to
	// the user alone.
	assert.Equal(t, http.StatusOK, send(t, signed(t, target, click("U0MALLORY", ActionApprove, value, requestTS, blocks), signingSecret, time.Now())))
	r.ephemeral(t, "U0MALLORY", "U0MALLORY may not approve this release")
	st := status(t, model)
	assert.Equal(t, workflows.StageAwaitingApproval, st.Stage)
	assert.Empty(t, st.Decisions, "nothing refused changes the release")

	// Alice approves; the same request again is a replay.
	valid := signed(t, target, alice, signingSecret, time.Now())
	assert.Equal(t, http.StatusOK, send(t, valid))
	assert.Equal(t, http.StatusConflict, send(t, valid))

	res := result(t, model)
	assert.Equal(t, workflows.OutcomePromoted, res.Outcome)
	assert.Equal(t, "every gate passed; approved by U0ALICE", res.Reason)
	require.Len(t, res.Status.Decisions, 1, "one decision: the replay changed nothing")
	d := res.Status.Decisions[0]
	assert.Equal(t, workflows.Approve, d.Kind)
	assert.Equal(t, "U0ALICE", d.Who)
	assert.Equal(t, "slack:U0ALICE", d.Signer, "signed by the bridge for the Slack user")
	assert.Equal(t, signing.Fingerprint(r.bridge.PublicKey()), d.Key)
	assert.Equal(t, "Alice", d.Name)
	assert.Equal(t, "slack", d.Source)
	assert.Equal(t, "update", d.Channel)

	// The request is edited to show who decided, without buttons; the opening
	// message's status line follows the release to its outcome.
	edit := r.slack.await(t, "approval request edited", func(c call) bool {
		return c.Method == "chat.update" && c.Form.Get("ts") == requestTS && strings.Contains(blocksText(c), "Approved by <@U0ALICE> (Alice) via slack")
	})
	assert.Contains(t, blocksText(edit), signing.Fingerprint(r.bridge.PublicKey()), "the thread shows the key that signed")
	assert.NotContains(t, edit.Form.Get("blocks"), ActionApprove)
	r.slack.await(t, "status line promoted", func(c call) bool {
		return c.Method == "chat.update" && c.Form.Get("ts") == openingTS && strings.Contains(c.Form.Get("blocks"), "promoted: every gate passed")
	})
	r.slack.await(t, "outcome in the thread", func(c call) bool {
		return c.Method == "chat.postMessage" && c.Form.Get("thread_ts") == openingTS && strings.Contains(c.Form.Get("text"), "promoted: every gate passed; approved by U0ALICE")
	})

	// No secret in the history or the logs.
	r.handler.Wait()
	h := history(t, model)
	require.True(t, strings.Contains(h, `"name":"Alice"`), "the history holds the decision with the Slack identity")
	require.True(t, strings.Contains(h, `"Announce"`), "the history holds the Slack activities")
	logs := r.logs.String()
	require.True(t, strings.Contains(logs, "decision recorded"), "the handler logged")
	require.True(t, strings.Contains(logs, "refused an interaction"), "the handler logged the refusals")
	for _, s := range secrets {
		assert.False(t, strings.Contains(h, s), "secret %.9s... in the history", s)
		assert.False(t, strings.Contains(logs, s), "secret %.9s... in the logs", s)
	}
}

// envelope is a Socket Mode frame carrying a click.
func envelope(id, payload string) string {
	return fmt.Sprintf(`{"envelope_id":%q,"type":"interactive","accepts_response_payload":false,"payload":%s}`, id, payload)
}

// Over Socket Mode: approvers are a user group, four eyes and a quorum of two. The
// starter's click is refused, the first approval leaves the buttons with one more
// needed, a redelivered envelope is handled once, the same approver twice is
// refused, and the second approver's click promotes.
func TestSocketModeQuorumAndFourEyes(t *testing.T) {
	r := newRig(t)
	r.slack.setGroups(
		slack.UserGroup{ID: "S0RELEASE", Handle: "release-approvers", Users: []string{"U0CAROL", "U0ALICE", "U0BOB"}},
		slack.UserGroup{ID: "S0OTHER", Handle: "others", Users: []string{"U0MALLORY"}},
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.handler.RunSocketMode(ctx, r.cfg) }()
	t.Cleanup(func() { cancel(); <-done })

	model := r.start(t, "wine-socket", "  approverGroups: [S0RELEASE]\n  quorum: 2\n  fourEyes: true\n", "U0CAROL")
	request, value := r.approvalRequest(t, model)
	ts, blocks := r.tsOf(t, request), request.Form.Get("blocks")
	assert.Contains(t, blocksText(request), "<!subteam^S0RELEASE>")
	assert.Contains(t, blocksText(request), "*quorum* 2")

	r.slack.SendToWebsocket(envelope("env-carol", click("U0CAROL", ActionApprove, value, ts, blocks)))
	r.ephemeral(t, "U0CAROL", "U0CAROL started this release and may not approve it (four eyes)")
	r.slack.SendToWebsocket(envelope("env-mallory", click("U0MALLORY", ActionApprove, value, ts, blocks)))
	r.ephemeral(t, "U0MALLORY", "allowed approvers are members of S0RELEASE")

	aliceClick := envelope("env-alice", click("U0ALICE", ActionApprove, value, ts, blocks))
	r.slack.SendToWebsocket(aliceClick)
	first := r.slack.await(t, "request edited after the first approval", func(c call) bool {
		return c.Method == "chat.update" && c.Form.Get("ts") == ts && strings.Contains(blocksText(c), "Approved by <@U0ALICE> (Alice) via slack") &&
			strings.Contains(blocksText(c), "· 1 more approval(s) needed")
	})
	assert.Contains(t, first.Form.Get("blocks"), ActionApprove, "buttons stay until the quorum is met")
	// Slack redelivers an envelope it thinks was not acknowledged: handled once.
	r.slack.SendToWebsocket(aliceClick)
	r.slack.SendToWebsocket(envelope("env-alice-again", click("U0ALICE", ActionApprove, value, ts, blocks)))
	r.ephemeral(t, "U0ALICE", "U0ALICE has already approved: the release needs 2 approvals")
	st := status(t, model)
	assert.Equal(t, workflows.StageAwaitingApproval, st.Stage)
	require.Len(t, st.Decisions, 1, "refusals and the redelivery changed nothing")

	r.slack.SendToWebsocket(envelope("env-bob", click("U0BOB", ActionApprove, value, ts, blocks)))
	res := result(t, model)
	assert.Equal(t, workflows.OutcomePromoted, res.Outcome)
	assert.Equal(t, "every gate passed; approved by U0ALICE, U0BOB", res.Reason)
	require.Len(t, res.Status.Decisions, 2)
	assert.Equal(t, "Alice", res.Status.Decisions[0].Name)
	assert.Equal(t, "Bob Builder", res.Status.Decisions[1].Name)
	r.slack.await(t, "request closed", func(c call) bool {
		return c.Method == "chat.update" && c.Form.Get("ts") == ts && strings.Contains(blocksText(c), "Approved by <@U0BOB> (Bob Builder)") &&
			!strings.Contains(c.Form.Get("blocks"), ActionApprove)
	})
	r.handler.Wait()
	h, logs := history(t, model), r.logs.String()
	for _, s := range secrets {
		assert.False(t, strings.Contains(h, s), "secret %.9s... in the history", s)
		assert.False(t, strings.Contains(logs, s), "secret %.9s... in the logs", s)
	}
}

// Slack down: every Web API call fails. The release neither blocks nor fails, and
// it is approved through the CLI's path (release.Decide).
func TestSlackDownNeverBlocksARelease(t *testing.T) {
	r := newRig(t)
	r.slack.down.Store(true)
	model := r.start(t, "wine-down", "  approvers: [alice]\n", "carol")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	final, err := release.Watch(ctx, tc, model, 50*time.Millisecond, func(st workflows.Status) {
		if st.Stage == workflows.StageAwaitingApproval && len(st.Decisions) == 0 {
			req := workflows.DecisionRequest{Source: "cli"}
			run, err := release.ReleaseRun(ctx, tc, model)
			require.NoError(t, err)
			require.NoError(t, r.key(t, "alice").SignDecision(&req, workflows.WorkflowID(model), run, workflows.Approve))
			_, err = release.Decide(ctx, tc, model, workflows.Approve, req, false)
			assert.NoError(t, err)
		}
	})
	require.NoError(t, err)
	assert.Equal(t, workflows.OutcomePromoted, final.Outcome)
	for _, c := range r.slack.recorded() {
		t.Errorf("Slack is down, yet it took %s", c.Method)
	}
	logs := r.logs.String()
	for _, s := range secrets {
		assert.False(t, strings.Contains(logs, s), "secret %.9s... in the logs", s)
	}
}

// A click replayed after the worker restarted (its memory of seen requests gone,
// Slack's signature still fresh) reaches the release again as the same signed
// decision, and the release refuses it: the replay protection lives in the release.
func TestClickReplayedAfterRestartIsRefused(t *testing.T) {
	r := newRig(t)
	model := r.start(t, "wine-replay", "  approvers: [U0ALICE, U0BOB]\n  quorum: 2\n", "carol")
	request, value := r.approvalRequest(t, model)
	ts, blocks := r.tsOf(t, request), request.Form.Get("blocks")
	click := signed(t, r.http.URL, click("U0ALICE", ActionApprove, value, ts, blocks), signingSecret, time.Now())
	body, err := io.ReadAll(click.Body)
	require.NoError(t, err)
	replay := func(target string) *http.Request {
		req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header = click.Header.Clone()
		return req
	}
	require.Equal(t, http.StatusOK, send(t, replay(r.http.URL)))
	r.slack.await(t, "first approval shown", func(c call) bool {
		return c.Method == "chat.update" && c.Form.Get("ts") == ts && strings.Contains(blocksText(c), "1 more approval(s) needed")
	})

	// The restarted worker: a new handler, which has seen nothing.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	restarted, err := NewHandler(ctx, r.cfg, TemporalDecider{Client: tc, Bridge: r.bridge})
	require.NoError(t, err)
	srv := httptest.NewServer(restarted)
	t.Cleanup(srv.Close)
	require.Equal(t, http.StatusOK, send(t, replay(srv.URL)), "Slack's signature is still valid")
	r.ephemeral(t, "U0ALICE", "replayed: this signed decision")
	restarted.Wait()
	st := status(t, model)
	assert.Equal(t, workflows.StageAwaitingApproval, st.Stage)
	require.Len(t, st.Decisions, 1, "the replay changed nothing")
	assert.Contains(t, r.logs.String(), "replayed")
}

// Requests that are not approval clicks are refused with a log line and counted: a
// JSON body, a payload that is not an interaction, an unknown action, a malformed
// button value.
func TestMalformedInteractionsAreLoggedAndCounted(t *testing.T) {
	var mu sync.Mutex
	counted := map[string]int{}
	r := newRig(t)
	r.cfg.Refused = func(kind, reason string) {
		mu.Lock()
		defer mu.Unlock()
		counted[reason]++
	}
	h, err := NewHandler(context.Background(), r.cfg, TemporalDecider{Client: tc, Bridge: r.bridge})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	jsonBody := signed(t, srv.URL, "x", signingSecret, time.Now())
	body := `{"type":"block_actions"}`
	jsonBody.Body = io.NopCloser(strings.NewReader(body))
	jsonBody.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	jsonBody.ContentLength = int64(len(body))
	stamp := jsonBody.Header.Get("X-Slack-Request-Timestamp")
	mac := hmac.New(sha256.New, []byte(signingSecret))
	fmt.Fprintf(mac, "v0:%s:%s", stamp, body)
	jsonBody.Header.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	jsonBody.Header.Set("Content-Type", "application/json")
	assert.Equal(t, http.StatusBadRequest, send(t, jsonBody), "a JSON body")
	assert.Equal(t, http.StatusBadRequest, send(t, signed(t, srv.URL, "not json", signingSecret, time.Now())), "not an interaction")
	assert.Equal(t, http.StatusOK, send(t, signed(t, srv.URL, click("U0ALICE", "mlrelease_unknown", `{"model":"wine"}`, "1.2", "[]"), signingSecret, time.Now())))
	assert.Equal(t, http.StatusOK, send(t, signed(t, srv.URL, click("U0ALICE", ActionApprove, "not-a-target", "1.2", "[]"), signingSecret, time.Now())))
	h.Wait()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]int{"malformed": 3, "unknown_action": 1}, counted)
	logs := r.logs.String()
	assert.Equal(t, 4, strings.Count(logs, "refused an interaction"), "each refusal is logged:\n%s", logs)
}
