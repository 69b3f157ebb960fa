package workflows

// Issue 12 (signed decisions). State.go and api.go call into this file: removing it
// breaks the build; ask before moving it.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/signing"
)

// Signed decisions (rule 9): a decision counts only when it is signed by a key the
// release trusts. The keys are fixed when the release starts; the validators check
// each signature against them as a pure computation.

// MetricRefused counts refused decisions, by source, kind and reason; the worker
// serves it on /metrics.
const MetricRefused = "mlrelease_decisions_refused_total"

// ErrTypeRefused is the application error type of a refused decision; its detail is
// the reason (RefusedUnsigned, ...).
const ErrTypeRefused = "DecisionRefused"

// StartKind is the statement kind of a signed start.
const StartKind = "start"

// SlackPrincipalPrefix marks the principals the Slack bridge signs for: a Slack user
// ID behind it ("slack:U0ALICE"). Only signers with such a principal may vouch for
// user groups, and the bridge key is trusted for nothing else.
const SlackPrincipalPrefix = "slack:"

const (
	// MaxSignatureLifetime bounds a signature's validity, and so how long a release
	// keeps the nonces it has seen.
	MaxSignatureLifetime = time.Hour
	// clockSkew is how far in the future a signature's issue time may be.
	clockSkew = 5 * time.Minute
	// MaxTrustText bounds the allowed signers a release carries (rule 10).
	MaxTrustText = 64 << 10
	// maxTrustedKeysShown bounds the keys the status lists.
	maxTrustedKeysShown = 20
)

// Why a decision was refused: the reason label of MetricRefused.
const (
	RefusedUnsigned     = "unsigned"
	RefusedBadSignature = "bad_signature"
	RefusedUnknownKey   = "unknown_key"
	RefusedOtherRun     = "other_run"
	RefusedReplayed     = "replayed"
	RefusedExpired      = "expired"
	RefusedNotAllowed   = "not_allowed"
	RefusedInvalid      = "invalid"
)

// Signing modes of a release.
const (
	// ModeSigned takes only decisions signed by a trusted key.
	ModeSigned = "signed"
	// ModeUnsigned takes the name the caller typed: only when the plan says
	// approval.unsigned and the worker has no allowed signers of its own.
	ModeUnsigned = "unsigned"
	// ModeLegacy is a release started before signed decisions: unsigned.
	ModeLegacy = "legacy-unsigned"
)

// Signed is a decision's signature and what it binds besides the request's own
// fields (DecisionRequest embeds it; the JSON fields sit beside who and comment).
type Signed struct {
	// Release is the first run ID of the release the signature is for.
	Release   string    `json:"release,omitempty"`
	IssuedAt  time.Time `json:"issuedAt,omitzero"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	Nonce     string    `json:"nonce,omitempty"`
	// Signature is the armored SSHSIG signature (namespace "mlrelease") of the
	// statement (signing.Statement) the request makes.
	Signature string `json:"signature,omitempty"`

	// attribution is what the validator established; the handler records it.
	attribution Attribution
}

// Statement is what req signs for kind in workflow.
func (req DecisionRequest) Statement(workflowID, kind string) signing.Statement {
	return signing.Statement{Workflow: workflowID, Release: req.Release, Kind: kind, Signer: strings.TrimSpace(req.Who),
		Name: req.Name, Source: req.Source, Comment: req.Comment, Groups: req.Groups,
		IssuedAt: req.IssuedAt, ExpiresAt: req.ExpiresAt, Nonce: req.Nonce}
}

// Attribution is who a recorded decision is from, as its signature proved it.
type Attribution struct {
	// Key is the SHA256 fingerprint of the key that signed.
	Key string `json:"key,omitempty"`
	// Signer is the principal the key signed as.
	Signer string `json:"signer,omitempty"`
	// Unsigned marks a decision taken on a name the caller typed.
	Unsigned bool `json:"unsigned,omitempty"`
}

// StartTrust is what the starter gives the release to trust (ReleaseInput embeds it).
type StartTrust struct {
	// AllowedSigners is the plan's allowed-signers file, read at start.
	AllowedSigners string `json:"allowedSigners,omitempty"`
	// StartSigned signs the start: a statement of kind "start" for the workflow ID,
	// no release yet, StartedBy as signer and StartComment(plan) as comment.
	StartSigned *Signed `json:"startSigned,omitempty"`

	// startComment, when set, is the comment a release started before version 2
	// of signed decisions verifies its start with.
	startComment string
}

// StartComment is the comment a start's signature covers: the model and version,
// the approval policy and the plan's allowed signers (by SHA-256), so that a start's
// signature cannot be reused for a release that trusts other keys or asks less.
func StartComment(p plan.Plan, allowedSigners string) string {
	ap := p.Approval
	sum := sha256.Sum256([]byte(allowedSigners))
	return fmt.Sprintf("release model %s version %s; approval required=%t approvers=%q groups=%q quorum=%d fourEyes=%t unsigned=%t; allowed signers sha256:%s",
		p.Model, p.Candidate, ap.Required, ap.Approvers, ap.ApproverGroups, ap.Needed(), ap.FourEyes, ap.Unsigned, hex.EncodeToString(sum[:]))
}

// SigningStatus is how the release authenticates decisions (Status embeds it).
type SigningStatus struct {
	// Signing is the mode: signed, unsigned (names are self-asserted), or
	// legacy-unsigned.
	Signing string `json:"signing,omitempty"`
	// TrustedKeys lists the keys the release trusts: "principals fingerprint".
	TrustedKeys []string `json:"trustedKeys,omitempty"`
	// ReleaseRun is the release's identity that signatures name: its first run ID.
	ReleaseRun string `json:"releaseRun,omitempty"`
	// StarterKey is the fingerprint of the key that signed the start.
	StarterKey string `json:"starterKey,omitempty"`
	// TrustNote says what was ignored and why (plan keys, an unsigned start).
	TrustNote string `json:"trustNote,omitempty"`
}

// Unsigned reports whether the release takes names the caller typed.
func (s SigningStatus) Unsigned() bool { return s.Signing != "" && s.Signing != ModeSigned }

// signingState is the release's trust, fixed at start and carried across
// continue-as-new, and the nonces it took (kept until their signatures expire).
type signingState struct {
	Mode           string      `json:"mode,omitempty"`
	AllowedSigners string      `json:"allowedSigners,omitempty"`
	StarterKey     string      `json:"starterKey,omitempty"`
	StartVerified  bool        `json:"startVerified,omitempty"`
	Used           []usedNonce `json:"used,omitempty"`
}

type usedNonce struct {
	Nonce   string    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

// WorkerTrust is the worker's own trust: its allowed signers and its Slack bridge's
// public key. A release takes it once, when it starts.
type WorkerTrust struct {
	// AllowedSigners is the worker's allowed-signers file (MLRELEASE_ALLOWED_SIGNERS).
	// When set, it is the root of trust: the plan's own keys count only when a key
	// in it signed the start, and approval.unsigned is not honoured.
	AllowedSigners string `json:"allowedSigners,omitempty"`
	// SlackBridge is the bridge key's public key (authorized-keys form): trusted for
	// slack:* principals only.
	SlackBridge string `json:"slackBridge,omitempty"`
}

var (
	workerTrustMu sync.Mutex
	workerTrust   WorkerTrust
)

// SetWorkerTrust sets the worker's trust, which releases started from then on take
// (the worker host calls it once, before polling).
func SetWorkerTrust(t WorkerTrust) {
	workerTrustMu.Lock()
	defer workerTrustMu.Unlock()
	workerTrust = t
}

func currentWorkerTrust() WorkerTrust {
	workerTrustMu.Lock()
	defer workerTrustMu.Unlock()
	return workerTrust
}

// startSigning fixes the release's trust when a new release starts. Releases
// started before signed decisions replay unsigned, as they ran.
func (r *release) startSigning(ctx workflow.Context, in ReleaseInput) {
	// Version 1 signed starts over the model and version only; 2 also over the
	// approval policy and the plan's allowed signers (StartComment).
	v := workflow.GetVersion(ctx, "signed-decisions", workflow.DefaultVersion, 2)
	if v == workflow.DefaultVersion {
		r.Signing = signingState{Mode: ModeLegacy}
		r.Status.SigningStatus = SigningStatus{Signing: ModeLegacy}
		return
	}
	if v == 1 {
		in.startComment = fmt.Sprintf("release model %s version %s", in.Plan.Model, in.Plan.Candidate)
	}
	var wt WorkerTrust
	if err := workflow.SideEffect(ctx, func(workflow.Context) any { return currentWorkerTrust() }).Get(&wt); err != nil {
		wt = WorkerTrust{}
	}
	// The workflow ID signatures name is the model's (WorkflowID), not the one the
	// SDK reports, which a replayer replaces.
	info := workflow.GetInfo(ctx)
	// A release the watcher started (its child, on the worker's own plans) has no
	// human starter: four eyes has no one to exclude. The parent is the server's word.
	byWatcher := in.StartedBy == WatcherActor && info.ParentWorkflowExecution != nil &&
		info.ParentWorkflowExecution.ID == WatcherWorkflowID
	r.Signing, r.Status.SigningStatus = resolveTrust(WorkflowID(in.Plan.Model), in, wt, workflow.Now(ctx), byWatcher)
	r.Status.ReleaseRun = releaseRun(info)
}

// resolveTrust decides what a release trusts, from the worker's trust, the
// starter's and the plan's: a pure function.
func resolveTrust(workflowID string, in ReleaseInput, wt WorkerTrust, now time.Time, byWatcher bool) (signingState, SigningStatus) {
	var notes []string
	worker, err := signing.ParseAllowedSigners([]byte(wt.AllowedSigners))
	if err != nil {
		notes = append(notes, "the worker's allowed signers are invalid and were ignored: "+err.Error())
		worker, wt.AllowedSigners = nil, ""
	}
	st := signingState{Mode: ModeSigned}
	text := wt.AllowedSigners

	// Who started it: a start signed by a key the worker trusts, or the plan does.
	starterKey, startErr := verifyStart(workflowID, in, worker, now)
	planKeys := in.AllowedSigners
	switch {
	case planKeys == "":
	case wt.AllowedSigners == "":
		text = joinLines(text, planKeys)
	case startErr == nil:
		text = joinLines(text, planKeys)
	default:
		notes = append(notes, "the plan's allowed signers were ignored: the worker has its own and a key in them did not sign the start ("+startErr.Error()+")")
	}
	if wt.SlackBridge != "" {
		text = joinLines(text, SlackPrincipalPrefix+`* namespaces="`+signing.Namespace+`" `+strings.TrimSpace(wt.SlackBridge)+" slack-bridge")
	}
	all, err := signing.ParseAllowedSigners([]byte(text))
	if err != nil {
		notes = append(notes, "some allowed signers are invalid and were skipped: "+err.Error())
	}
	if startErr != nil && wt.AllowedSigners == "" {
		starterKey, startErr = verifyStart(workflowID, in, all, now)
	}
	switch {
	case startErr == nil:
		st.StarterKey, st.StartVerified = starterKey, true
	case byWatcher:
		st.StartVerified = true // no key started it, so none is excluded
		notes = append(notes, "started by the release watcher")
	default:
		notes = append(notes, "the start is not attributed to a key: "+startErr.Error())
	}
	if in.Plan.Approval.Unsigned {
		if wt.AllowedSigners == "" {
			st.Mode = ModeUnsigned
		} else {
			notes = append(notes, "approval.unsigned was not honoured: the worker requires signatures")
		}
	}
	if len(text) > MaxTrustText {
		notes = append(notes, fmt.Sprintf("the allowed signers are %d bytes, more than %d: none are trusted", len(text), MaxTrustText))
		text, all = "", nil
	}
	st.AllowedSigners = text
	status := SigningStatus{Signing: st.Mode, StarterKey: st.StarterKey, TrustNote: strings.Join(notes, "; ")}
	if st.Mode == ModeUnsigned {
		status.Signing = "unsigned: names are self-asserted (approval.unsigned)"
	}
	for i, s := range all {
		if i == maxTrustedKeysShown {
			status.TrustedKeys = append(status.TrustedKeys, fmt.Sprintf("and %d more", len(all)-i))
			break
		}
		status.TrustedKeys = append(status.TrustedKeys, s.Principals+" "+signing.Fingerprint(s.Key))
	}
	return st, status
}

func joinLines(a, b string) string {
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n" + b
}

// verifyStart checks the start's signature and returns the key's fingerprint.
func verifyStart(workflowID string, in ReleaseInput, trusted signing.AllowedSigners, now time.Time) (string, error) {
	s := in.StartSigned
	if s == nil || s.Signature == "" {
		return "", errors.New("the start is not signed")
	}
	comment := in.startComment
	if comment == "" {
		comment = StartComment(in.Plan, in.AllowedSigners)
	}
	req := DecisionRequest{Who: in.StartedBy, Comment: comment, Source: "cli", Signed: *s}
	id, ref := authenticateWith(trusted, workflowID, "", StartKind, req, now)
	if ref != nil {
		return "", ref
	}
	return id.Key, nil
}

// refusal is a refused decision with its reason label.
type refusal struct {
	reason string
	err    error
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

func refuseDecision(reason, format string, args ...any) *refusal {
	return &refusal{reason: reason, err: fmt.Errorf(format, args...)}
}

// authenticateWith verifies req's signature for kind against trusted: the release,
// the time, the signature and the signer's key. It does not check nonces.
func authenticateWith(trusted signing.AllowedSigners, workflowID, release, kind string, req DecisionRequest, now time.Time) (Attribution, *refusal) {
	who := strings.TrimSpace(req.Who)
	if req.Signature == "" {
		return Attribution{}, refuseDecision(RefusedUnsigned, "the decision is not signed: this release takes only decisions signed by a key it trusts (sign with `mlrelease %s --key FILE`, or make the input with `mlrelease sign`)", kind)
	}
	if req.Release != release {
		return Attribution{}, refuseDecision(RefusedOtherRun, "the signature is for release %q, not this release %q of %s", req.Release, release, workflowID)
	}
	if req.IssuedAt.IsZero() || req.ExpiresAt.IsZero() || req.Nonce == "" {
		return Attribution{}, refuseDecision(RefusedInvalid, "the signed decision lacks issuedAt, expiresAt or nonce")
	}
	if life := req.ExpiresAt.Sub(req.IssuedAt); life <= 0 || life > MaxSignatureLifetime {
		return Attribution{}, refuseDecision(RefusedExpired, "the signature's lifetime %s is not between 0 and %s", life, MaxSignatureLifetime)
	}
	if !now.Before(req.ExpiresAt) {
		return Attribution{}, refuseDecision(RefusedExpired, "the signature expired at %s (now %s): sign again", req.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if req.IssuedAt.After(now.Add(clockSkew)) {
		return Attribution{}, refuseDecision(RefusedExpired, "the signature is issued at %s, in the future (now %s): check the signer's clock", req.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	key, err := signing.Verify(req.Signature, signing.Namespace, req.Statement(workflowID, kind).Message())
	if err != nil {
		return Attribution{}, refuseDecision(RefusedBadSignature, "bad signature: %v", err)
	}
	if _, err := trusted.Check(who, key, signing.Namespace, now); err != nil {
		return Attribution{}, refuseDecision(RefusedUnknownKey, "untrusted key: %v", err)
	}
	if len(req.Groups) > 0 && !strings.HasPrefix(who, SlackPrincipalPrefix) {
		return Attribution{}, refuseDecision(RefusedNotAllowed, "groups %v are claimed by %s: only the Slack bridge vouches for user groups", req.Groups, who)
	}
	return Attribution{Key: signing.Fingerprint(key), Signer: who}, nil
}

// authenticate checks who sends req and returns the request as the validators take
// it: Who is the verified principal (a Slack principal without its prefix).
func (r *release) authenticate(ctx workflow.Context, kind string, req DecisionRequest) (DecisionRequest, *refusal) {
	req.Who = strings.TrimSpace(req.Who)
	switch r.Signing.Mode {
	case ModeUnsigned, ModeLegacy, "":
		req.attribution = Attribution{Unsigned: true}
		return req, nil
	}
	info := workflow.GetInfo(ctx)
	now := workflow.Now(ctx)
	trusted, _ := signing.ParseAllowedSigners([]byte(r.Signing.AllowedSigners))
	if len(trusted) == 0 {
		return req, refuseDecision(RefusedUnknownKey, "this release trusts no keys (no allowed signers in its plan or its worker's MLRELEASE_ALLOWED_SIGNERS): it takes no decisions; cancel the workflow to roll it back")
	}
	attr, ref := authenticateWith(trusted, WorkflowID(r.plan.Model), releaseRun(info), kind, req, now)
	if ref != nil {
		return req, ref
	}
	for _, u := range r.Signing.Used {
		if u.Nonce == req.Nonce {
			return req, refuseDecision(RefusedReplayed, "replayed: this signed decision (nonce %s) was already taken", req.Nonce)
		}
	}
	bridge := strings.HasPrefix(attr.Signer, SlackPrincipalPrefix)
	if kind == Approve {
		if r.plan.Approval.FourEyes {
			if !r.Signing.StartVerified {
				return req, refuseDecision(RefusedNotAllowed, "four eyes: the start of this release was not signed by a trusted key, so no one can be told apart from its starter; abort it and start it signed")
			}
			if attr.Key == r.Signing.StarterKey {
				return req, refuseDecision(RefusedNotAllowed, "four eyes: key %s started this release and may not approve it; another approver must", attr.Key)
			}
		}
		for _, d := range r.Approvals {
			if d.Key == attr.Key && !bridge {
				return req, refuseDecision(RefusedNotAllowed, "key %s has already approved (as %s): the quorum counts distinct signers", attr.Key, d.Signer)
			}
		}
	}
	req.Who = strings.TrimPrefix(attr.Signer, SlackPrincipalPrefix)
	req.attribution = attr
	return req, nil
}

// releaseRun is the release's identity that continue-as-new keeps: its first run.
func releaseRun(info *workflow.Info) string {
	if info.FirstRunID != "" {
		return info.FirstRunID
	}
	return info.WorkflowExecution.RunID
}

// screen authenticates and validates a decision; a refusal is logged and counted
// on the worker (the caller of an update sees it too).
func (r *release) screen(ctx workflow.Context, kind string, req DecisionRequest, channel string) (DecisionRequest, error) {
	checked, ref := r.authenticate(ctx, kind, req)
	if ref == nil {
		if err := r.validate(kind, checked); err != nil {
			ref = &refusal{reason: RefusedInvalid, err: err}
			if strings.Contains(err.Error(), "may not") {
				ref.reason = RefusedNotAllowed
			}
		}
	}
	if ref != nil {
		workflow.GetLogger(ctx).Warn("decision refused", "kind", kind, "reason", ref.reason, "who", strings.TrimSpace(req.Who),
			"source", req.Source, "channel", channel, "error", ref.err.Error())
		workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"source": "workflow", "kind": kind, "reason": ref.reason}).
			Counter(MetricRefused).Inc(1)
		if channel == "signal" {
			return req, ref // recorded in the status as the refusal's reason
		}
		return req, temporal.NewApplicationErrorWithOptions(ref.err.Error(), ErrTypeRefused,
			temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{ref.reason}})
	}
	return checked, nil
}

// admit screens a decision and applies it; the nonce is kept until its signature
// expires, so that the same signed decision is never taken twice. The handler
// screens again: two copies of a decision validated together stop here.
func (r *release) admit(ctx workflow.Context, kind string, req DecisionRequest, channel string) (Decision, error) {
	checked, err := r.screen(ctx, kind, req, channel)
	if err != nil {
		return Decision{}, err
	}
	if r.Signing.Mode == ModeSigned {
		now := workflow.Now(ctx)
		r.Signing.Used = slices.DeleteFunc(r.Signing.Used, func(u usedNonce) bool { return !now.Before(u.Expires) })
		r.Signing.Used = append(r.Signing.Used, usedNonce{Nonce: checked.Nonce, Expires: checked.ExpiresAt})
	}
	return r.apply(ctx, kind, checked, channel), nil
}

// Registry tags of a promotion's attribution.
const (
	// TagApproverKey holds the fingerprints of the keys that approved, in order, or
	// "unsigned".
	TagApproverKey = "mlrelease.approver.key"
	// TagSigning is how the release took decisions: signed, or unsigned.
	TagSigning = "mlrelease.signing"
)

// signingLabel is the registry's label of how the release takes decisions.
func (r *release) signingLabel() string {
	if r.Status.SigningStatus.Unsigned() {
		return "unsigned"
	}
	return ModeSigned
}

// signingTags adds the approvals' keys and the signing mode to registry tags.
func (r *release) signingTags(tags map[string]string) {
	tags[TagSigning] = r.signingLabel()
	keys := make([]string, 0, len(r.Approvals))
	for _, d := range r.Approvals {
		k := d.Key
		if k == "" {
			k = "unsigned"
		}
		keys = append(keys, k)
	}
	tags[TagApproverKey] = strings.Join(keys, ", ")
}
