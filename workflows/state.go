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

// release is one release's state. Handlers change it; the stages read it.
type release struct {
	plan      plan.Plan
	status    Status
	champion  registry.Version
	candidate registry.Version

	// deployed and aliasMoved say what the rollback must undo.
	deployed   bool
	aliasMoved bool

	// approvals are the accepted approvals; approved is set by the one that
	// completes the plan's quorum.
	approvals []Decision
	approved  *Decision
	interrupt *Decision // a rejection or an abort

	// thread is the release's opening message in the notifier (Slack), kept here so
	// that every later update threads under it, across worker restarts.
	thread *notify.Ref
	// approvalText is the approval request's line, kept to redraw it.
	approvalText string

	// judged is the sequential judges' evidence in the current stage.
	judged judgedStage
}

// judgedStage carries the sequential judges' states from one analysis to the next
// within a stage (shadow, canary, watch).
type judgedStage struct {
	stage  Stage
	since  time.Time
	states map[string]analysis.JudgeState
}

// keep takes the judges' new states out of a round's measurements, which then go to
// the status without them (the status shows the evidence, not the working state).
func (j *judgedStage) keep(ms []analysis.Measurement) []analysis.Measurement {
	out := make([]analysis.Measurement, len(ms))
	for i, m := range ms {
		if m.State != nil {
			j.states[m.Metric] = *m.State
		}
		m.State = nil
		out[i] = m
	}
	return out
}

func newRelease(ctx workflow.Context, in ReleaseInput) *release {
	info := workflow.GetInfo(ctx)
	now := workflow.Now(ctx)
	return &release{plan: in.Plan, status: Status{
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
	}}
}

// setHandlers registers the status query and the decisions, each as an update with
// a validator and as a signal of the same name. A signal is checked by the same
// validator when the workflow takes it; a refused one is recorded, not applied.
func (r *release) setHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (Status, error) { return r.status, nil }); err != nil {
		return fmt.Errorf("set query handler: %w", err)
	}
	for _, kind := range Decisions {
		err := workflow.SetUpdateHandlerWithOptions(ctx, kind,
			func(ctx workflow.Context, req DecisionRequest) (Decision, error) {
				return r.apply(ctx, kind, req, "update"), nil
			},
			workflow.UpdateHandlerOptions{
				Validator:   func(ctx workflow.Context, req DecisionRequest) error { return r.validate(kind, req) },
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
				if err := r.validate(kind, req); err != nil {
					r.status.Decisions = append(r.status.Decisions, Decision{Kind: kind, Who: req.Who, Comment: req.Comment, Source: req.Source,
						Name: req.Name, Channel: "signal", At: workflow.Now(ctx), Refused: true, Reason: err.Error()})
					r.touch(ctx)
					return
				}
				r.apply(ctx, kind, req, "signal")
			})
		}
		for !done {
			sel.Select(ctx)
		}
	})
	return nil
}

// validate refuses a decision that the release cannot take now or from this person.
// It only reads state.
func (r *release) validate(kind string, req DecisionRequest) error {
	who := strings.TrimSpace(req.Who)
	if who == "" {
		return errors.New("who is empty: say who decides")
	}
	stage := r.status.Stage
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
		for _, d := range r.approvals {
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
		if r.status.Paused {
			return errors.New("the release is already paused")
		}
	case Resume:
		if !r.status.Paused {
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
	by := strings.TrimSpace(r.status.StartedBy)
	return by != "" && (strings.EqualFold(by, who) || strings.EqualFold(by, strings.TrimSpace(name)))
}

// apply records and applies a validated decision.
func (r *release) apply(ctx workflow.Context, kind string, req DecisionRequest, channel string) Decision {
	d := Decision{Kind: kind, Who: strings.TrimSpace(req.Who), Comment: req.Comment, Source: req.Source, Name: req.Name, Channel: channel, At: workflow.Now(ctx)}
	if kind == Approve {
		d.Remaining = r.plan.Approval.Needed() - len(r.approvals) - 1
	}
	r.status.Decisions = append(r.status.Decisions, d)
	switch kind {
	case Approve:
		r.approvals = append(r.approvals, d)
		if d.Remaining <= 0 {
			r.approved = &d
		}
	case Reject, Abort:
		r.interrupt = &d
	case Pause:
		r.status.Paused = true
	case Resume:
		r.status.Paused = false
	}
	r.touch(ctx)
	return d
}

// check turns a rejection or an abort into the verdict that ends the release.
func (r *release) check() error {
	if r.interrupt == nil {
		return nil
	}
	d := r.interrupt
	verb := "rejected"
	if d.Kind == Abort {
		verb = "aborted"
	}
	return fail(fmt.Sprintf("%s by %s: %s", verb, d.Who, d.Comment))
}

func (r *release) setStage(ctx workflow.Context, s Stage) {
	r.status.Stage = s
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
	r.status.UpdatedAt = workflow.Now(ctx)
	workflow.SetCurrentDetails(ctx, r.status.Markdown())
}
