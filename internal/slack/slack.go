// Package slack brings releases to where the team talks: a thread per release whose
// opening message's status line follows the release, an approval request with the
// evidence and Approve and Reject buttons, and the handler that turns clicks (over
// signed HTTP requests or Socket Mode) into the release's decision updates, with
// the Slack user's identity.
//
// Slack is best-effort: it never blocks or fails a release, and approvals stay
// possible through the CLI and Temporal. The tokens and the signing secret come
// from the environment and never appear in logs, errors or workflow history.
package slack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/slack-go/slack"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/notify"
)

// Config is what the notifier and the handler need.
type Config struct {
	config.Slack
	// WebUIURL is the Temporal Web UI, for links to releases.
	WebUIURL string
	// ReportURL is where people reach the worker's release reports (/releases/MODEL).
	ReportURL string
	Logger    *slog.Logger
	// Refused, when set, counts an interaction the handler refused before it reached
	// a release (bad Slack signature, replay, malformed, unknown action).
	Refused func(kind, reason string)
}

func (c Config) client() *slack.Client {
	opts := []slack.Option{}
	if c.APIURL != "" {
		opts = append(opts, slack.OptionAPIURL(strings.TrimRight(c.APIURL, "/")+"/"))
	}
	if c.AppToken != "" {
		opts = append(opts, slack.OptionAppLevelToken(c.AppToken))
	}
	return slack.New(c.BotToken, opts...)
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// redactor removes the secrets from error text, in case a library ever quotes them.
type redactor []string

func (r redactor) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, s := range r {
		if s != "" {
			clean = strings.ReplaceAll(clean, s, "[redacted]")
		}
	}
	if clean == msg {
		return err
	}
	return errors.New(clean)
}

func (c Config) redactor() redactor { return redactor{c.BotToken, c.SigningSecret, c.AppToken} }

// Notifier posts a release's messages to a channel: the opening message, a thread
// of updates under it whose status line it edits, and the approval request.
type Notifier struct {
	api     *slack.Client
	channel string
	links   links
	redact  redactor
}

// NewNotifier is a Notifier for cfg, which must name a bot token and a channel.
func NewNotifier(cfg Config) (*Notifier, error) {
	switch {
	case cfg.BotToken == "":
		return nil, errors.New("slack: MLRELEASE_SLACK_BOT_TOKEN is not set")
	case cfg.Channel == "":
		return nil, errors.New("slack: MLRELEASE_SLACK_CHANNEL is not set: say which channel release threads go to")
	}
	return &Notifier{api: cfg.client(), channel: cfg.Channel, links: links{webUI: cfg.WebUIURL, report: cfg.ReportURL}, redact: cfg.redactor()}, nil
}

var (
	_ notify.Notifier  = (*Notifier)(nil)
	_ notify.Announcer = (*Notifier)(nil)
)

// Notify posts an update: in the release's thread, whose opening message then shows
// it as the status line; or, with m.Replace, redraws that message.
func (n *Notifier) Notify(ctx context.Context, m notify.Message) error {
	if m.Replace != nil {
		return n.update(ctx, *m.Replace, m)
	}
	if _, err := n.post(ctx, m); err != nil {
		return err
	}
	if m.Thread != nil {
		opening := m
		opening.Kind = notify.KindRelease
		return n.update(ctx, *m.Thread, opening)
	}
	return nil
}

// Announce posts the release's opening message, or its approval request (in the
// thread and broadcast to the channel), and returns its reference.
func (n *Notifier) Announce(ctx context.Context, m notify.Message) (notify.Ref, error) {
	ref, err := n.post(ctx, m)
	if err != nil {
		return notify.Ref{}, err
	}
	if m.Thread != nil && m.Kind == notify.KindApproval {
		opening := m
		opening.Kind = notify.KindRelease
		_ = n.update(ctx, *m.Thread, opening) // the status line; the request is posted
	}
	return ref, nil
}

func (n *Notifier) blocks(m notify.Message) []slack.Block {
	switch m.Kind {
	case notify.KindRelease:
		return openingBlocks(m, n.links)
	case notify.KindApproval:
		return approvalBlocks(m, n.links)
	}
	return updateBlocks(m)
}

func (n *Notifier) post(ctx context.Context, m notify.Message) (notify.Ref, error) {
	opts := []slack.MsgOption{slack.MsgOptionText(fallback(m), false), slack.MsgOptionBlocks(n.blocks(m)...)}
	if m.Thread != nil && m.Kind != notify.KindRelease {
		opts = append(opts, slack.MsgOptionTS(m.Thread.TS))
		if m.Kind == notify.KindApproval {
			opts = append(opts, slack.MsgOptionBroadcast())
		}
	}
	channel := n.channel
	if m.Thread != nil && m.Thread.Channel != "" {
		channel = m.Thread.Channel
	}
	ch, ts, err := n.api.PostMessageContext(ctx, channel, opts...)
	if err != nil {
		return notify.Ref{}, n.redact.err(fmt.Errorf("slack: post %s update of release %s to channel %s: %w", m.Model, m.ReleaseID, channel, err))
	}
	return notify.Ref{Channel: ch, TS: ts}, nil
}

func (n *Notifier) update(ctx context.Context, ref notify.Ref, m notify.Message) error {
	_, _, _, err := n.api.UpdateMessageContext(ctx, ref.Channel, ref.TS, slack.MsgOptionText(fallback(m), false), slack.MsgOptionBlocks(n.blocks(m)...))
	if err != nil {
		return n.redact.err(fmt.Errorf("slack: edit message %s of release %s: %w", ref.TS, m.ReleaseID, err))
	}
	return nil
}
