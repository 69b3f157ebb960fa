package slack

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/workflows"
)

// Decider sends a decision to a model's release. run, when not empty, is the run
// the decision is meant for: a decision for an ended run is refused.
type Decider interface {
	Decide(ctx context.Context, model, run, kind string, req workflows.DecisionRequest) (workflows.Decision, error)
}

// TemporalDecider decides through Temporal updates, as the CLI does
// (release.Decide): the release's validators check every decision. With a Bridge
// key it signs each decision as slack:USER, after the handler checked Slack's
// signature: releases trust that key for Slack principals only.
type TemporalDecider struct {
	Client client.Client
	Bridge ssh.Signer
}

// BridgeLifetime is how long the bridge's signature of a click stays valid: as long
// as Slack's own request timestamp does.
const BridgeLifetime = 5 * time.Minute

// ErrEndedRun means a button belongs to a release that has ended.
var ErrEndedRun = errors.New("this approval request belongs to a release that has ended")

// Decide implements Decider.
func (d TemporalDecider) Decide(ctx context.Context, model, run, kind string, req workflows.DecisionRequest) (workflows.Decision, error) {
	id := workflows.WorkflowID(model)
	desc, err := d.Client.DescribeWorkflowExecution(ctx, id, "")
	info := desc.GetWorkflowExecutionInfo()
	if err == nil && run != "" && info.GetExecution().GetRunId() != run && info.GetFirstRunId() != run {
		// A button posted by an earlier run of the same release (it continued as
		// new since) still decides it: the runs share their first run.
		old, oerr := d.Client.DescribeWorkflowExecution(ctx, id, run)
		if oerr != nil || old.GetWorkflowExecutionInfo().GetFirstRunId() != info.GetFirstRunId() {
			return workflows.Decision{}, fmt.Errorf("%w: %w", release.ErrRefused, ErrEndedRun)
		}
	}
	if d.Bridge != nil && err == nil {
		first := info.GetFirstRunId()
		if first == "" {
			first = info.GetExecution().GetRunId()
		}
		bridge := release.Signer{Key: d.Bridge, Principal: workflows.SlackPrincipalPrefix + req.Who, Lifetime: BridgeLifetime}
		if err := bridge.SignDecision(&req, id, first, kind); err != nil {
			return workflows.Decision{}, fmt.Errorf("sign the click with the bridge key: %w", err)
		}
	}
	return release.Decide(ctx, d.Client, model, kind, req, false)
}

// Handler turns clicks on approval requests into decision updates. Requests over
// HTTP are verified with the signing secret, refused when stale (more than five
// minutes off) and when replayed; Socket Mode needs no public URL.
type Handler struct {
	api     *slack.Client
	decider Decider
	secret  string
	logger  *slog.Logger
	refused func(kind, reason string)
	redact  redactor
	seen    *replays
	ctx     context.Context
	work    sync.WaitGroup
	// Timeout bounds the handling of one click.
	Timeout time.Duration
}

// NewHandler is a Handler for cfg's bot token (to resolve users and answer) and
// signing secret (for HTTP). ctx bounds the work it does after answering Slack.
func NewHandler(ctx context.Context, cfg Config, d Decider) (*Handler, error) {
	if cfg.BotToken == "" {
		return nil, errors.New("slack: MLRELEASE_SLACK_BOT_TOKEN is not set")
	}
	refused := cfg.Refused
	if refused == nil {
		refused = func(string, string) {}
	}
	return &Handler{api: cfg.client(), decider: d, secret: cfg.SigningSecret, logger: cfg.logger(), redact: cfg.redactor(), refused: refused,
		seen: newReplays(10 * time.Minute), ctx: ctx, Timeout: 30 * time.Second}, nil
}

// Wait waits for the clicks being handled.
func (h *Handler) Wait() { h.work.Wait() }

// ServeHTTP is the interactivity endpoint (Request URL in the Slack app's
// Interactivity settings). It answers within Slack's 3 seconds and handles the
// click after answering.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if h.secret == "" {
		http.Error(w, "the Slack signing secret is not configured", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	if err := verify(r.Header, body, h.secret); err != nil {
		h.refuse("", "slack_signature", err.Error(), "remote", r.RemoteAddr)
		http.Error(w, "refused: "+err.Error(), http.StatusUnauthorized)
		return
	}
	// A valid signature covers the timestamp and the body: the same signature twice
	// is the same request twice.
	if !h.seen.first("sig:" + r.Header.Get("X-Slack-Signature")) {
		h.refuse("", "replayed", "the same signed request again", "remote", r.RemoteAddr)
		http.Error(w, "refused: replayed request", http.StatusConflict)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || !form.Has("payload") {
		h.refuse("", "malformed", "not a form with a payload (a JSON body?)", "remote", r.RemoteAddr)
		http.Error(w, "bad form: want application/x-www-form-urlencoded with payload=", http.StatusBadRequest)
		return
	}
	var cb slack.InteractionCallback
	if err := cb.UnmarshalJSON([]byte(form.Get("payload"))); err != nil {
		h.refuse("", "malformed", "payload is not an interaction: "+err.Error(), "remote", r.RemoteAddr)
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusOK)
	h.handleLater(cb)
}

// verify checks Slack's v0 signature and the timestamp's age.
func verify(header http.Header, body []byte, secret string) error {
	sv, err := slack.NewSecretsVerifier(header, secret)
	switch {
	case errors.Is(err, slack.ErrExpiredTimestamp):
		return errors.New("stale timestamp (more than 5 minutes off)")
	case err != nil:
		return errors.New("missing or malformed signature")
	}
	if _, err := sv.Write(body); err != nil {
		return err
	}
	if err := sv.Ensure(); err != nil {
		return errors.New("bad signature")
	}
	return nil
}

func (h *Handler) handleLater(cb slack.InteractionCallback) {
	h.work.Add(1)
	go func() {
		defer h.work.Done()
		ctx, cancel := context.WithTimeout(h.ctx, h.Timeout)
		defer cancel()
		h.Handle(ctx, cb)
	}()
}

// Handle takes one click: it resolves who clicked (name, user groups), sends the
// decision as an update, and edits the request to show who decided, or explains a
// refusal to the user alone.
func (h *Handler) Handle(ctx context.Context, cb slack.InteractionCallback) {
	if cb.Type != slack.InteractionTypeBlockActions || len(cb.ActionCallback.BlockActions) == 0 {
		return
	}
	action := cb.ActionCallback.BlockActions[0]
	kind := map[string]string{ActionApprove: workflows.Approve, ActionReject: workflows.Reject}[action.ActionID]
	if kind == "" {
		h.refuse("", "unknown_action", "action "+action.ActionID+" is not an approval button", "user", cb.User.ID)
		return
	}
	channel := cb.Container.ChannelID
	if channel == "" {
		channel = cb.Channel.ID
	}
	user := cb.User.ID
	t, err := parseTarget(action.Value)
	if err != nil {
		h.refuse(kind, "malformed", err.Error(), "user", user)
		h.explain(ctx, channel, user, err.Error())
		return
	}
	name, groups := h.identify(ctx, cb.User)
	req := workflows.DecisionRequest{Who: user, Name: name, Groups: groups, Source: "slack"}
	// The same click always makes the same signed decision, so that the release
	// refuses a replay of it, whichever worker replica takes it and after restarts.
	req.Nonce, req.IssuedAt = clickIdentity(cb, action)
	if kind == workflows.Reject {
		req.Comment = "rejected in Slack by " + name
	}
	d, err := h.decider.Decide(ctx, t.Model, t.Run, kind, req)
	if errors.Is(err, release.ErrRefused) {
		h.logger.Warn("slack: decision refused", "model", t.Model, "kind", kind, "user", user, "reason", err.Error())
		h.explain(ctx, channel, user, fmt.Sprintf("Your %s of %s was refused: %s", kind, t.Model, h.redact.err(err)))
		return
	}
	if err != nil {
		h.logger.Warn("slack: decision not sent", "model", t.Model, "kind", kind, "user", user, "error", h.redact.err(err).Error())
		h.explain(ctx, channel, user, fmt.Sprintf("Your %s of %s could not be sent: %s. It was not recorded; try again, or use `mlrelease %s %s`.",
			kind, t.Model, h.redact.err(err), kind, t.Model))
		return
	}
	h.logger.Info("slack: decision recorded", "model", t.Model, "kind", kind, "user", user, "name", name)
	h.showDecided(ctx, cb, d)
}

// identify resolves the user's display name and user groups. Failures leave the
// name from the payload and no groups: approvers named by ID still work.
func (h *Handler) identify(ctx context.Context, u slack.User) (string, []string) {
	name := u.Name
	if info, err := h.api.GetUserInfoContext(ctx, u.ID); err == nil {
		switch {
		case info.Profile.DisplayName != "":
			name = info.Profile.DisplayName
		case info.RealName != "":
			name = info.RealName
		case info.Name != "":
			name = info.Name
		}
	} else {
		h.logger.Warn("slack: users.info", "user", u.ID, "error", h.redact.err(err).Error())
	}
	var groups []string
	all, err := h.api.GetUserGroupsContext(ctx, slack.GetUserGroupsOptionIncludeUsers(true))
	if err != nil {
		h.logger.Warn("slack: usergroups.list (approverGroups need the usergroups:read scope)", "error", h.redact.err(err).Error())
	}
	for _, g := range all {
		for _, member := range g.Users {
			if member == u.ID {
				groups = append(groups, g.ID)
				break
			}
		}
	}
	return name, groups
}

// showDecided edits the clicked request: a line with who decided, and no buttons
// once the request is decided (a rejection, or the approval that met the quorum).
func (h *Handler) showDecided(ctx context.Context, cb slack.InteractionCallback, d workflows.Decision) {
	line := decidedLine(decidedOf(d))
	if d.Remaining > 0 {
		line += fmt.Sprintf(" · %d more approval(s) needed", d.Remaining)
	}
	blocks := []slack.Block{}
	for _, b := range cb.Message.Blocks.BlockSet {
		if d.Remaining == 0 {
			if ab, ok := b.(*slack.ActionBlock); ok && ab.BlockID == blockDecide {
				continue
			}
		}
		blocks = append(blocks, b)
	}
	blocks = append(blocks, slack.NewContextBlock("", mrkdwn(line)))
	channel, ts := cb.Container.ChannelID, cb.Container.MessageTs
	if channel == "" {
		channel, ts = cb.Channel.ID, cb.Message.Timestamp
	}
	if _, _, _, err := h.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(cb.Message.Text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
		h.logger.Warn("slack: edit the approval request", "error", h.redact.err(err).Error())
	}
}

// explain tells only the user why nothing happened.
func (h *Handler) explain(ctx context.Context, channel, user, text string) {
	if _, err := h.api.PostEphemeralContext(ctx, channel, user, slack.MsgOptionText(text, false)); err != nil {
		h.logger.Warn("slack: ephemeral answer", "error", h.redact.err(err).Error())
	}
}

// replays remembers keys for a while: requests seen again within it are replays.
// Older requests are refused anyway, by their timestamp.
type replays struct {
	mu   sync.Mutex
	keep time.Duration
	seen map[string]time.Time
}

func newReplays(keep time.Duration) *replays {
	return &replays{keep: keep, seen: map[string]time.Time{}}
}

// first records key and reports whether it is new.
func (r *replays) first(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for k, at := range r.seen {
		if now.Sub(at) > r.keep {
			delete(r.seen, k)
		}
	}
	if _, ok := r.seen[key]; ok {
		return false
	}
	r.seen[key] = now
	return true
}

func decidedOf(d workflows.Decision) notify.Decided {
	return notify.Decided{Kind: d.Kind, Who: d.Who, Name: d.Name, Source: d.Source, Comment: d.Comment, Key: d.Key, Unsigned: d.Unsigned}
}

// refuse logs and counts an interaction refused before it reached a release.
func (h *Handler) refuse(kind, reason, why string, attrs ...any) {
	h.logger.Warn("slack: refused an interaction", append([]any{"reason", reason, "detail", why}, attrs...)...)
	h.refused(kind, reason)
}

// clickIdentity is the nonce and issue time of a click: derived from what Slack
// says about it (team, channel, message, user, action and its time), so that the
// same click is the same signed decision again.
func clickIdentity(cb slack.InteractionCallback, a *slack.BlockAction) (string, time.Time) {
	ts := a.ActionTs
	if ts == "" {
		ts = cb.ActionTs
	}
	h := sha256.New()
	for _, part := range []string{"slack-click", cb.Team.ID, cb.Container.ChannelID, cb.Channel.ID, cb.Container.MessageTs,
		cb.Message.Timestamp, cb.User.ID, a.ActionID, a.BlockID, a.Value, ts} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	nonce := "slack-" + base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
	return nonce, slackTime(ts)
}

// slackTime reads a Slack timestamp ("1700000000.123456"); zero if it is not one.
func slackTime(ts string) time.Time {
	sec, frac, _ := strings.Cut(ts, ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || s <= 0 {
		return time.Time{}
	}
	var nsec int64
	if frac != "" {
		if f, err := strconv.ParseInt((frac + "000000000")[:9], 10, 64); err == nil {
			nsec = f
		}
	}
	return time.Unix(s, nsec).UTC()
}
