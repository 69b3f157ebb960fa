// Package workflows holds ReleaseWorkflow, the durable release of one model version
// from staging to production, and the names and types its clients share. Everything
// here is deterministic orchestration; activities/ does the I/O.
package workflows

import (
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

// Names shared by the worker, the CLI and the Slack handler.
const (
	// TaskQueue is the default task queue of the worker.
	TaskQueue = "mlrelease"
	// WorkflowName is ReleaseWorkflow's registered name.
	WorkflowName = "ReleaseWorkflow"

	// Decisions: each is an update (with a validator) and a signal of the same name.
	Approve = "approve"
	Reject  = "reject"
	Pause   = "pause"
	Resume  = "resume"
	Abort   = "abort"

	// QueryStatus returns a Status.
	QueryStatus = "status"
)

// Decisions lists the decision names in a fixed order.
var Decisions = []string{Approve, Reject, Pause, Resume, Abort}

// WorkflowID is the ID of a model's release. One ID per model keeps at most one
// release of a model running: Temporal refuses a second start with the same ID.
func WorkflowID(model string) string { return "release/" + model }

// Search attributes that let the Temporal Web UI list and filter releases. The dev
// server needs them registered (make run does; see README).
var (
	ModelKey            = temporal.NewSearchAttributeKeyKeyword("MlreleaseModel")
	CandidateVersionKey = temporal.NewSearchAttributeKeyKeyword("MlreleaseCandidateVersion")
	StageKey            = temporal.NewSearchAttributeKeyKeyword("MlreleaseStage")
	CanaryWeightKey     = temporal.NewSearchAttributeKeyInt64("MlreleaseCanaryWeight")
)

// Stage is where a release is.
type Stage string

const (
	StageResolving        Stage = "resolving"
	StageDeploying        Stage = "deploying"
	StageStaging          Stage = "staging"
	StageShadow           Stage = "shadow"
	StageCanary           Stage = "canary"
	StageAwaitingApproval Stage = "awaiting_approval"
	StagePromoting        Stage = "promoting"
	StageWatching         Stage = "watching"
	StagePromoted         Stage = "promoted"
	StageRollingBack      Stage = "rolling_back"
	StageRolledBack       Stage = "rolled_back"
)

// Done reports whether the release has ended.
func (s Stage) Done() bool { return s == StagePromoted || s == StageRolledBack }

// Outcomes of a release.
const (
	OutcomePromoted   = "promoted"
	OutcomeRolledBack = "rolled_back"
)

// ReleaseInput starts a release.
type ReleaseInput struct {
	Plan plan.Plan `json:"plan"`
	// StartedBy is who started it, for the record.
	StartedBy string `json:"startedBy"`
	// Carried is the state of the release's previous run when it continued as new;
	// nil for a new release.
	Carried *Carried `json:"carried,omitempty"`
	// StartTrust is the plan's allowed signers and the start's signature (signed.go).
	StartTrust
	// Limits lower the run's continue-as-new limits (tests); zero keeps the defaults.
	Limits RunLimits `json:"limits,omitzero"`
	// Report is the release's report page (the worker's /releases/MODEL), for the
	// links in its details; empty for none.
	Report string `json:"report,omitempty"`
}

// RunLimits bound one run of a release before it continues as new.
type RunLimits struct {
	RoundsPerRun int `json:"roundsPerRun,omitempty"`
	HistoryLimit int `json:"historyLimit,omitempty"`
}

// DecisionRequest is the argument of every decision update and signal.
type DecisionRequest struct {
	// Who decides: a user name, or a Slack user ID.
	Who string `json:"who"`
	// Comment says why; required to reject or abort.
	Comment string `json:"comment"`
	// Source is the client that sent it: cli, slack, ui.
	Source string `json:"source,omitempty"`
	// Name is the decider's display name, for the record (Slack sets it; Who stays
	// the Slack user ID that the plan's approvers name).
	Name string `json:"name,omitempty"`
	// Groups are the user groups (Slack user group IDs) the decider belongs to, as
	// the client resolved them; the validator checks them against the plan's
	// approverGroups. Validators cannot ask Slack themselves.
	Groups []string `json:"groups,omitempty"`
	// Signed is the signature over the decision (signed.go).
	Signed
}

// Decision is a decision as the release recorded it.
type Decision struct {
	Kind    string `json:"kind"`
	Who     string `json:"who"`
	Comment string `json:"comment,omitempty"`
	Source  string `json:"source,omitempty"`
	// Name is the decider's display name, when the client gave one.
	Name string `json:"name,omitempty"`
	// Remaining is how many more approvals the plan's quorum waits for.
	Remaining int `json:"remaining,omitempty"`
	// Channel is "update" or "signal".
	Channel string    `json:"channel"`
	At      time.Time `json:"at"`
	// Refused decisions are recorded with the reason and not applied.
	Refused bool   `json:"refused,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Attribution is the key that signed it.
	Attribution
}

// Gate is one staging gate's result.
type Gate = analysis.Gate

// AnalysisRound is one interval's measurements within a stage.
type AnalysisRound struct {
	// Round numbers the release's rounds from 1.
	Round        int                    `json:"round,omitempty"`
	Stage        Stage                  `json:"stage"`
	Step         int                    `json:"step,omitempty"`
	Weight       int                    `json:"weight"`
	At           time.Time              `json:"at"`
	Measurements []analysis.Measurement `json:"measurements"`
}

// Status is what the status query returns: where the release is and all evidence so far.
type Status struct {
	ReleaseID       string      `json:"releaseId"`
	Model           string      `json:"model"`
	Champion        string      `json:"champion"`
	Candidate       string      `json:"candidate"`
	Stage           Stage       `json:"stage"`
	CandidateWeight int         `json:"candidateWeight"`
	ShadowShare     int         `json:"shadowShare"`
	Step            int         `json:"step"`
	Steps           []plan.Step `json:"steps"`
	Paused          bool        `json:"paused"`
	// PausedUntil is when a paused release rolls back unless resumed (the plan's
	// pause limit).
	PausedUntil time.Time `json:"pausedUntil,omitzero"`
	Gates       []Gate    `json:"gates"`
	// Analyses are the latest rounds in full (at most RecentRounds); Rounds counts
	// every round of the release, and Series draws every metric over the whole
	// release in at most SeriesPoints points. Every round's full evidence is in the
	// registry's audit log (mlrelease evidence MODEL).
	Analyses []AnalysisRound `json:"analyses"`
	Rounds   int             `json:"rounds"`
	Series   []MetricSeries  `json:"series,omitempty"`
	// Decisions are the latest RecentDecisions decisions (approvals, rejections and
	// aborts are never dropped); DecisionsTaken counts every one. All are in the
	// registry's audit log.
	Decisions        []Decision `json:"decisions"`
	DecisionsTaken   int        `json:"decisionsTaken,omitempty"`
	Outcome          string     `json:"outcome,omitempty"`
	Reason           string     `json:"reason,omitempty"`
	StartedBy        string     `json:"startedBy"`
	StartedAt        time.Time  `json:"startedAt"`
	UpdatedAt        time.Time  `json:"updatedAt"`
	ApprovalRequired bool       `json:"approvalRequired"`
	Approvers        []string   `json:"approvers,omitempty"`
	ApproverGroups   []string   `json:"approverGroups,omitempty"`
	// Quorum is how many distinct approvals promotion waits for (1 when unset).
	Quorum   int  `json:"quorum,omitempty"`
	FourEyes bool `json:"fourEyes,omitempty"`
	// SigningStatus says how decisions are authenticated (signed.go).
	SigningStatus
	// Budget is the release's error budget: each statistical judge's share of the
	// plan's analysis.alpha, and how much of it is spent.
	Budget *analysis.Budget `json:"budget,omitempty"`
	// Runs is how many workflow runs the release has taken (continue-as-new).
	Runs int `json:"runs,omitempty"`
	// Report links to the release's report, when the starter named one.
	Report string `json:"report,omitempty"`
}

// Result is ReleaseWorkflow's result.
type Result struct {
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
	Status  Status `json:"status"`
}

// Markdown renders the status for the Web UI's current details.
func (s Status) Markdown() string {
	var b strings.Builder
	// The outcome first: the Web UI cuts long details off.
	if s.Outcome != "" {
		b.WriteString("outcome: **" + s.Outcome + "**: " + s.Reason + "\n\n")
	}
	b.WriteString("**" + s.Model + "** candidate `" + s.Candidate + "` vs champion `" + s.Champion + "`")
	if s.Report != "" {
		b.WriteString(" · [release report](" + s.Report + ")")
	}
	b.WriteString("\n\n")
	b.WriteString("stage: **" + string(s.Stage) + "**")
	if s.SigningStatus.Unsigned() {
		b.WriteString(" · decisions **unsigned**: names are self-asserted")
	}
	if s.Paused {
		b.WriteString(" (paused")
		if !s.PausedUntil.IsZero() {
			b.WriteString("; rolls back at " + s.PausedUntil.UTC().Format(time.RFC3339) + " unless resumed")
		}
		b.WriteString(")")
	}
	b.WriteString("\n\ncandidate traffic: " + strconv.Itoa(s.CandidateWeight) + "%, shadow: " + strconv.Itoa(s.ShadowShare) + "%")
	if s.Step > 0 {
		b.WriteString(", canary step " + strconv.Itoa(s.Step) + "/" + strconv.Itoa(len(s.Steps)))
	}
	b.WriteString("\n")
	if line := s.Budget.Summary(); line != "" {
		b.WriteString("\nerror budget: " + line + "\n")
	}
	if n := len(s.Analyses); n > 0 {
		last := s.Analyses[n-1]
		b.WriteString("\nlatest analysis (" + string(last.Stage) + ", round " + strconv.Itoa(max(last.Round, s.Rounds)) + "):\n\n")
		// One verdict a line.
		for _, m := range last.Measurements {
			b.WriteString("- " + m.Metric + ": **" + string(m.Verdict) + "** " + m.Message + "\n")
		}
	}
	return b.String()
}

// SearchAttributes lists the search attributes a release sets, for registering them.
var SearchAttributes = []temporal.SearchAttributeKey{ModelKey, CandidateVersionKey, StageKey, CanaryWeightKey}
