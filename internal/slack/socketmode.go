package slack

import (
	"context"
	"errors"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// RunSocketMode receives interactions over Socket Mode with cfg's app-level token
// until ctx ends, reconnecting with a growing pause when the connection fails. The
// connection is opened with the token, so its frames need no signature; envelopes
// Slack sends again are handled once.
func (h *Handler) RunSocketMode(ctx context.Context, cfg Config) error {
	if cfg.AppToken == "" {
		return errors.New("slack: MLRELEASE_SLACK_APP_TOKEN is not set")
	}
	pause := time.Second
	for ctx.Err() == nil {
		sm := socketmode.New(cfg.client())
		connected := make(chan struct{}, 1)
		done := make(chan error, 1)
		go func() { done <- sm.RunContext(ctx) }()
		err := h.receive(ctx, sm, done, connected)
		select {
		case <-connected:
			pause = time.Second
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		h.logger.Warn("slack: Socket Mode connection ended; reconnecting", "error", h.redact.err(err), "in", pause)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Minute)
	}
	return nil
}

func (h *Handler) receive(ctx context.Context, sm *socketmode.Client, done <-chan error, connected chan<- struct{}) error {
	for {
		select {
		case err := <-done:
			return err
		case evt := <-sm.Events:
			switch evt.Type {
			case socketmode.EventTypeConnected:
				h.logger.Info("slack: Socket Mode connected")
				select {
				case connected <- struct{}{}:
				default:
				}
			case socketmode.EventTypeInteractive:
				if evt.Request == nil {
					continue
				}
				_ = sm.Ack(*evt.Request)
				cb, ok := evt.Data.(slack.InteractionCallback)
				if !ok || !h.seen.first("envelope:"+evt.Request.EnvelopeID) {
					continue
				}
				h.handleLater(cb)
			case socketmode.EventTypeEventsAPI, socketmode.EventTypeSlashCommand:
				if evt.Request != nil {
					_ = sm.Ack(*evt.Request)
				}
			}
		}
	}
}
