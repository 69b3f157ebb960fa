package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// release is one release: its plan and its state. Handlers change the state; the
// stages read it.
type release struct {
	plan plan.Plan
	// input is the run's input; continue-as-new hands it on with the state.
	input ReleaseInput
	// limits are the run's continue-as-new limits (ReleaseInput.Limits).
	limits RunLimits
	// bounded is set for releases started since changeLongRelease; roundsAtStart is
	// Status.Rounds when this run began.
	bounded       bool
	roundsAtStart int
	// auditDecisions is set for releases started since changeAuditDecisions.
	auditDecisions bool
	// localIO is set for runs started since changeLocalIO: short I/O runs as local
	// activities, and analysis rounds are due on the bake's clock; localTraffic since
	// its version 2, when traffic changes on the gateway do too.
	localIO, localTraffic bool
	// pushRounds is set since changeLocalIO's version 3: the worker's round clock
	// pushes a bake's analysis rounds (rounds.go); drivers numbers its hand-overs.
	pushRounds bool
	drivers    int
	// Carried is the whole state. Continue-as-new hands it to the next run as it is
	// (ReleaseInput.Carried), so a field added to the release belongs in Carried and
	// is carried without more code.
	*Carried
}

// Carried is everything a release has that its plan does not say: where it is, what
// it decided and what the rollback must undo. It is one serialisable value so that
// continue-as-new carries all of it; add new state here, never to release.
type Carried struct {
	Status    Status           `json:"status"`
	Champion  registry.Version `json:"champion"`
	Candidate registry.Version `json:"candidate"`

	// Deployed and AliasMoved say what the rollback must undo.
	Deployed   bool `json:"deployed,omitempty"`
	AliasMoved bool `json:"aliasMoved,omitempty"`

	// Approvals are the accepted approvals; Approved is set by the one that
	// completes the plan's quorum.
	Approvals []Decision `json:"approvals,omitempty"`
	Approved  *Decision  `json:"approved,omitempty"`
	Interrupt *Decision  `json:"interrupt,omitempty"` // a rejection or an abort

	// Thread is the release's opening message in the notifier (Slack), kept here so
	// that every later update threads under it, across worker restarts and runs.
	Thread *notify.Ref `json:"thread,omitempty"`
	// ApprovalText is the approval request's line, kept to redraw it; ApprovalRequest
	// is the posted request, once known, and ApprovalDeadline when the wait times out.
	ApprovalText     string      `json:"approvalText,omitempty"`
	ApprovalRequest  *notify.Ref `json:"approvalRequest,omitempty"`
	ApprovalDeadline time.Time   `json:"approvalDeadline,omitzero"`

	// Judged is the sequential judges' evidence in the current stage.
	Judged judgedStage `json:"judged"`
	// Bake is how far the current bake has gone, to resume it in the next run.
	Bake bakeProgress `json:"bake"`
	// Unrecorded are analysis rounds not yet written to the registry's audit log;
	// UnrecordedDecisions the same of decisions.
	Unrecorded          []AnalysisRound `json:"unrecorded,omitempty"`
	UnrecordedDecisions []Decision      `json:"unrecordedDecisions,omitempty"`
	// Runs counts the runs before this one (continue-as-new).
	Runs int `json:"runs,omitempty"`
	// Signing is the release's trust and the nonces it took (signed.go).
	Signing signingState `json:"signing"`
}

// bakeProgress is a bake in progress: the stage and canary step, the time baked,
// and the stage's tally of verdicts.
type bakeProgress struct {
	Stage Stage `json:"stage,omitempty"`
	Step  int   `json:"step,omitempty"`
	// Start is the bake's clock: round k is due at Start + k intervals (set since
	// changeLocalIO). Elapsed is the clock's time at the latest round.
	Start   time.Time       `json:"start,omitzero"`
	Elapsed time.Duration   `json:"elapsed,omitempty"`
	Tally   *analysis.Tally `json:"tally,omitempty"`
}

// judgedStage carries the sequential judges' states from one analysis to the next
// within a stage (shadow, canary, watch).
type judgedStage struct {
	Stage  Stage                          `json:"stage,omitempty"`
	Since  time.Time                      `json:"since,omitzero"`
	States map[string]analysis.JudgeState `json:"states,omitempty"`
}

// keep takes the judges' new states out of a round's measurements, which then go to
// the status without them (the status shows the evidence, not the working state).
func (j *judgedStage) keep(ms []analysis.Measurement) []analysis.Measurement {
	out := make([]analysis.Measurement, len(ms))
	for i, m := range ms {
		if m.State != nil {
			if j.States == nil {
				j.States = map[string]analysis.JudgeState{}
			}
			j.States[m.Metric] = *m.State
		}
		m.State = nil
		out[i] = m
	}
	return out
}

// newRelease starts a release's state, or takes it over from the previous run.
func newRelease(ctx workflow.Context, in ReleaseInput) *release {
	if in.Carried != nil {
		c := *in.Carried
		c.Runs++
		c.Status.Runs = c.Runs + 1
		return &release{plan: in.Plan, input: in, limits: in.Limits, roundsAtStart: c.Status.Rounds, Carried: &c}
	}
	info := workflow.GetInfo(ctx)
	now := workflow.Now(ctx)
	r := &release{plan: in.Plan, input: in, limits: in.Limits, Carried: &Carried{Status: Status{
		ReleaseID:        info.WorkflowExecution.ID,
		Model:            in.Plan.Model,
		Candidate:        in.Plan.Candidate,
		Steps:            in.Plan.Canary.Steps,
		StartedBy:        in.StartedBy,
		StartedAt:        now,
		UpdatedAt:        now,
		ApprovalRequired: in.Plan.Approval.Required,
		Approvers:        in.Plan.Approval.Approvers,
		ApproverGroups:   in.Plan.Approval.ApproverGroups,
		Quorum:           in.Plan.Approval.Quorum,
		FourEyes:         in.Plan.Approval.FourEyes,
		Gates:            []Gate{},
		Analyses:         []AnalysisRound{},
		Decisions:        []Decision{},
		Runs:             1,
		Report:           in.Report,
	}}}
	// Rule 9: the keys the release trusts, fixed now.
	r.startSigning(ctx, in)
	return r
}

// setHandlers registers the status query and the decisions, each as an update with
// a validator and as a signal of the same name. A signal is checked by the same
// validator when the workflow takes it; a refused one is recorded, not applied.
func (r *release) setHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (Status, error) { return r.Status, nil }); err != nil {
		return fmt.Errorf("set query handler: %w", err)
	}
	for _, kind := range Decisions {
		err := workflow.SetUpdateHandlerWithOptions(ctx, kind,
			func(ctx workflow.Context, req DecisionRequest) (Decision, error) {
				return r.admit(ctx, kind, req, "update")
			},
			workflow.UpdateHandlerOptions{
				Validator: func(ctx workflow.Context, req DecisionRequest) error {
					_, err := r.screen(ctx, kind, req, "update")
					return err
				},
				Description: "decision: " + kind,
			})
		if err != nil {
			return fmt.Errorf("set update handler %s: %w", kind, err)
		}
	}
	workflow.Go(ctx, func(ctx workflow.Context) {
		sel := workflow.NewSelector(ctx)
		done := false
		sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) { done = true })
		for _, kind := range Decisions {
			sel.AddReceive(workflow.GetSignalChannel(ctx, kind), func(c workflow.ReceiveChannel, _ bool) {
				var req DecisionRequest
				c.Receive(ctx, &req)
				r.onSignal(ctx, kind, req)
			})
		}
		for !done {
			sel.Select(ctx)
		}
	})
	return nil
}

// onSignal takes a decision sent as a signal: validated like the update, and
// recorded as refused when the validator refuses it.
func (r *release) onSignal(ctx workflow.Context, kind string, req DecisionRequest) {
	if _, err := r.admit(ctx, kind, req, "signal"); err != nil {
		r.addDecision(Decision{Kind: kind, Who: req.Who, Comment: req.Comment, Source: req.Source,
			Name: req.Name, Channel: "signal", At: workflow.Now(ctx), Refused: true, Reason: err.Error()})
		r.touch(ctx)
	}
}

// validate refuses a decision that the release cannot take now or from this person.
// It only reads state.
func (r *release) validate(kind string, req DecisionRequest) error {
	who := strings.TrimSpace(req.Who)
	if who == "" {
		return errors.New("who is empty: say who decides")
	}
	stage := r.Status.Stage
	if stage.Done() || stage == StageRollingBack {
		return fmt.Errorf("the release has ended (stage %s)", stage)
	}
	ap := r.plan.Approval
	switch kind {
	case Approve:
		if stage != StageAwaitingApproval {
			return fmt.Errorf("cannot approve at stage %s: approval is taken only while awaiting approval", stage)
		}
		if !ap.Allows(who, req.Groups...) {
			return fmt.Errorf("%s may not approve this release: allowed approvers are %s", who, approvers(ap))
		}
		if ap.FourEyes && r.startedBy(who, req.Name) {
			return fmt.Errorf("%s started this release and may not approve it (four eyes): another approver must", who)
		}
		for _, d := range r.Approvals {
			if d.Who == who {
				return fmt.Errorf("%s has already approved: the release needs %d approvals from different approvers", who, ap.Needed())
			}
		}
	case Reject:
		if stage == StagePromoting || stage == StageWatching {
			return fmt.Errorf("cannot reject at stage %s: the release was approved; abort it instead", stage)
		}
		if !ap.Allows(who, req.Groups...) {
			return fmt.Errorf("%s may not reject this release: allowed approvers are %s", who, approvers(ap))
		}
		if strings.TrimSpace(req.Comment) == "" {
			return errors.New("comment is empty: say why you reject")
		}
	case Abort:
		if strings.TrimSpace(req.Comment) == "" {
			return errors.New("comment is empty: say why you abort")
		}
	case Pause:
		if stage != StageShadow && stage != StageCanary {
			return fmt.Errorf("cannot pause at stage %s: only shadow and canary stages pause", stage)
		}
		if r.Status.Paused {
			return errors.New("the release is already paused")
		}
	case Resume:
		if !r.Status.Paused {
			return errors.New("the release is not paused")
		}
	default:
		return fmt.Errorf("unknown decision %q", kind)
	}
	return nil
}

func approvers(ap plan.Approval) string {
	if len(ap.Approvers) == 0 && len(ap.ApproverGroups) == 0 {
		return "anyone"
	}
	out := strings.Join(ap.Approvers, ", ")
	if len(ap.ApproverGroups) > 0 {
		if out != "" {
			out += " and "
		}
		out += "members of " + strings.Join(ap.ApproverGroups, ", ")
	}
	return out
}

// startedBy reports whether the decider (by ID or display name) started the release.
func (r *release) startedBy(who, name string) bool {
	by := strings.TrimSpace(r.Status.StartedBy)
	return by != "" && (strings.EqualFold(by, who) || strings.EqualFold(by, strings.TrimSpace(name)))
}

// apply records and applies a validated decision.
func (r *release) apply(ctx workflow.Context, kind string, req DecisionRequest, channel string) Decision {
	d := Decision{Kind: kind, Who: strings.TrimSpace(req.Who), Comment: req.Comment, Source: req.Source, Name: req.Name, Channel: channel, At: workflow.Now(ctx), Attribution: req.attribution}
	if kind == Approve {
		d.Remaining = r.plan.Approval.Needed() - len(r.Approvals) - 1
	}
	r.addDecision(d)
	switch kind {
	case Approve:
		r.Approvals = append(r.Approvals, d)
		if d.Remaining <= 0 {
			r.Approved = &d
		}
	case Reject, Abort:
		r.Interrupt = &d
	case Pause:
		r.Status.Paused = true
		r.Status.PausedUntil = workflow.Now(ctx).Add(r.plan.Pause.LimitOrDefault())
	case Resume:
		r.Status.Paused = false
		r.Status.PausedUntil = time.Time{}
	}
	r.touch(ctx)
	return d
}

// check turns a rejection or an abort into the verdict that ends the release.
func (r *release) check() error {
	if r.Interrupt == nil {
		return nil
	}
	d := r.Interrupt
	verb := "rejected"
	if d.Kind == Abort {
		verb = "aborted"
	}
	return fail(fmt.Sprintf("%s by %s: %s", verb, d.Who, d.Comment))
}

func (r *release) setStage(ctx workflow.Context, s Stage) {
	r.Status.Stage = s
	r.upsert(ctx, StageKey.ValueSet(string(s)), ModelKey.ValueSet(r.plan.Model))
	r.touch(ctx)
}

// upsert updates search attributes. A server without them registered is logged, not
// fatal: the Web UI's filters are a convenience, the release is not.
func (r *release) upsert(ctx workflow.Context, updates ...temporal.SearchAttributeUpdate) {
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		workflow.GetLogger(ctx).Warn("upsert search attributes", "error", err)
	}
}

// touch stamps the status and refreshes the Web UI's current details.
func (r *release) touch(ctx workflow.Context) {
	r.Status.UpdatedAt = workflow.Now(ctx)
	workflow.SetCurrentDetails(ctx, r.Status.Markdown())
}
