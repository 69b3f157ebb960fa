// Package notify tells people how a release is going. Notifications are best-effort:
// a notifier that is down never blocks or fails a release.
package notify

import (
	"context"
	"log/slog"
)

// Message is one release update.
type Message struct {
	ReleaseID string `json:"releaseId"`
	Model     string `json:"model"`
	Champion  string `json:"champion"`
	Candidate string `json:"candidate"`
	Stage     string `json:"stage"`
	// Text is one line for people, Temporal-markdown allowed.
	Text string `json:"text"`
	// Evidence holds the key figures behind the update.
	Evidence map[string]string `json:"evidence,omitempty"`

	// Kind says what the message is: an update (empty), the release's opening
	// message (KindRelease) or an approval request (KindApproval).
	Kind string `json:"kind,omitempty"`
	// Summary is the plan in a line, repeated so that a notifier can redraw the
	// release's opening message with a new status line.
	Summary string `json:"summary,omitempty"`
	// Thread is the release's opening message: updates go under it, and its status
	// line follows them.
	Thread *Ref `json:"thread,omitempty"`
	// Replace, when set, redraws that message instead of posting a new one.
	Replace *Ref `json:"replace,omitempty"`
	// Figures are the latest measurements, candidate against champion.
	Figures []Figure `json:"figures,omitempty"`
	// Approval describes the decision asked for (KindApproval).
	Approval *Approval `json:"approval,omitempty"`

	// Namespace and RunID locate the release for links; the activity sets them, so
	// they never enter the workflow's history as inputs.
	Namespace string `json:"-"`
	RunID     string `json:"-"`
}

// Kinds of message.
const (
	KindRelease  = "release"
	KindApproval = "approval"
)

// Ref names a posted message so that later ones can thread under it or redraw it.
// It is kept in the workflow's state, so it survives restarts.
type Ref struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"`
}

// Figure is one metric's latest measurement.
type Figure struct {
	Metric    string   `json:"metric"`
	Verdict   string   `json:"verdict"`
	Candidate *float64 `json:"candidate,omitempty"`
	Champion  *float64 `json:"champion,omitempty"`
	Note      string   `json:"note,omitempty"`
}

// Approval is an approval request and the decisions taken on it so far.
type Approval struct {
	Approvers []string `json:"approvers,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	Quorum    int      `json:"quorum,omitempty"`
	FourEyes  bool     `json:"fourEyes,omitempty"`
	StartedBy string   `json:"startedBy,omitempty"`
	Timeout   string   `json:"timeout,omitempty"`
	OnTimeout string   `json:"onTimeout,omitempty"`
	// Decisions are the approvals and rejections taken, in order.
	Decisions []Decided `json:"decisions,omitempty"`
	// Closed says the request takes no more decisions (approved, rejected, ended).
	Closed bool `json:"closed,omitempty"`
	// Unsigned says the release takes typed names, not signatures.
	Unsigned bool `json:"unsigned,omitempty"`
}

// Decided is one recorded decision.
type Decided struct {
	Kind    string `json:"kind"`
	Who     string `json:"who"`
	Name    string `json:"name,omitempty"`
	Source  string `json:"source,omitempty"`
	Comment string `json:"comment,omitempty"`
	// Key is the fingerprint of the key that signed the decision; Unsigned marks a
	// name the caller typed (a release whose plan says approval.unsigned).
	Key      string `json:"key,omitempty"`
	Unsigned bool   `json:"unsigned,omitempty"`
}

// Notifier delivers release updates.
type Notifier interface {
	Notify(ctx context.Context, m Message) error
}

// Announcer is a Notifier whose messages later ones can refer to: the release's
// opening message and its approval request.
type Announcer interface {
	Announce(ctx context.Context, m Message) (Ref, error)
}

// Log writes updates to a structured log.
type Log struct {
	Logger *slog.Logger
}

// Notify logs m.
func (l Log) Notify(ctx context.Context, m Message) error {
	args := []any{"release", m.ReleaseID, "model", m.Model, "champion", m.Champion, "candidate", m.Candidate, "stage", m.Stage}
	for k, v := range m.Evidence {
		args = append(args, slog.String("evidence."+k, v))
	}
	l.Logger.InfoContext(ctx, m.Text, args...)
	return nil
}
