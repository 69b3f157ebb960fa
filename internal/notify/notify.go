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
}

// Notifier delivers release updates.
type Notifier interface {
	Notify(ctx context.Context, m Message) error
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
