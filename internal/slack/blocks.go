package slack

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/slack-go/slack"

	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/workflows"
)

// Action IDs of the approval request's buttons.
const (
	ActionApprove = "mlrelease_approve"
	ActionReject  = "mlrelease_reject"
	// blockDecide is the block ID of the approval request's buttons, which the
	// handler removes once the request is decided.
	blockDecide = "mlrelease_decide"
)

// target is what a button names: the release it decides, by model and run, so that
// a click on an old release's request never decides a newer release of the model.
type target struct {
	Model string `json:"model"`
	Run   string `json:"run,omitempty"`
}

func (t target) value() string {
	b, _ := json.Marshal(t)
	return string(b)
}

func parseTarget(v string) (target, error) {
	var t target
	if err := json.Unmarshal([]byte(v), &t); err != nil || t.Model == "" {
		return target{}, fmt.Errorf("button value %q names no release", v)
	}
	return t, nil
}

func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}
func plain(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
}

// webLink is the release's page in the Temporal Web UI.
// links are where a release's messages point: the Temporal Web UI and the worker's
// release report.
type links struct{ webUI, report string }

// reportLink is the release's report on the worker (/releases/MODEL).
func reportLink(base string, m notify.Message) string {
	if m.Model == "" {
		return ""
	}
	return release.ReportLink(base, m.Model)
}

func webLink(base string, m notify.Message) string {
	if base == "" || m.ReleaseID == "" {
		return ""
	}
	ns := m.Namespace
	if ns == "" {
		ns = "default"
	}
	u := strings.TrimRight(base, "/") + "/namespaces/" + url.PathEscape(ns) + "/workflows/" + url.PathEscape(m.ReleaseID)
	if m.RunID != "" {
		u += "/" + url.PathEscape(m.RunID) + "/history"
	}
	return u
}

func title(m notify.Message) string {
	return fmt.Sprintf("Release of %s: version %s against champion %s", m.Model, orUnknown(m.Candidate), orUnknown(m.Champion))
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// statusLine is the opening message's last line; it follows the release.
func statusLine(m notify.Message) string {
	return fmt.Sprintf("*Status:* %s: %s", stageEmoji(m.Stage), m.Text)
}

func stageEmoji(stage string) string {
	switch workflows.Stage(stage) {
	case workflows.StagePromoted:
		return ":white_check_mark: promoted"
	case workflows.StageRolledBack, workflows.StageRollingBack:
		return ":rewind: " + stage
	case workflows.StageAwaitingApproval:
		return ":raised_hand: awaiting approval"
	case "":
		return "started"
	}
	return ":hourglass_flowing_sand: " + stage
}

// openingBlocks is the release's parent message: model, versions, plan, status.
func openingBlocks(m notify.Message, l links) []slack.Block {
	blocks := []slack.Block{slack.NewHeaderBlock(plain(title(m)))}
	if m.Summary != "" {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn("*Plan:* "+m.Summary), nil, nil))
	}
	ctx := []slack.MixedElement{mrkdwn(statusLine(m))}
	if link := reportLink(l.report, m); link != "" {
		ctx = append(ctx, mrkdwn("<"+link+"|Release report>"))
	}
	if link := webLink(l.webUI, m); link != "" {
		ctx = append(ctx, mrkdwn("<"+link+"|Temporal Web UI>"))
	}
	return append(blocks, slack.NewContextBlock("", ctx...))
}

// updateBlocks is one stage's update in the thread, with its evidence.
func updateBlocks(m notify.Message) []slack.Block {
	blocks := []slack.Block{slack.NewSectionBlock(mrkdwn(fmt.Sprintf("*%s* %s", orUnknown(m.Stage), m.Text)), nil, nil)}
	if ev := evidence(m); len(ev) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(nil, ev, nil))
	}
	return blocks
}

// evidence renders the figures (candidate against champion), or else the evidence
// map, as section fields (Slack allows ten).
func evidence(m notify.Message) []*slack.TextBlockObject {
	var out []*slack.TextBlockObject
	if len(m.Figures) > 0 {
		for _, f := range m.Figures {
			s := fmt.Sprintf("*%s*: %s\ncandidate %s, champion %s", f.Metric, f.Verdict, num(f.Candidate), num(f.Champion))
			out = append(out, mrkdwn(s))
		}
	} else {
		keys := make([]string, 0, len(m.Evidence))
		for k := range m.Evidence {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			out = append(out, mrkdwn(fmt.Sprintf("*%s*: %s", k, m.Evidence[k])))
		}
	}
	if len(out) > 10 {
		out = out[:10]
	}
	return out
}

func num(v *float64) string {
	if v == nil {
		return "no data"
	}
	return strconv.FormatFloat(*v, 'g', 4, 64)
}

// approvalBlocks is the approval request: the evidence, who may decide, the Web UI
// link, the decisions taken, and Approve and Reject buttons (each with a
// confirmation) while it is open.
func approvalBlocks(m notify.Message, l links) []slack.Block {
	ap := m.Approval
	if ap == nil {
		ap = &notify.Approval{}
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(plain(fmt.Sprintf("Approval: %s version %s", m.Model, orUnknown(m.Candidate)))),
		slack.NewSectionBlock(mrkdwn(fmt.Sprintf("Every gate passed for *%s* version *%s* against champion *%s*; %s.", m.Model, orUnknown(m.Candidate), orUnknown(m.Champion), m.Text)), nil, nil),
	}
	if ev := evidence(m); len(ev) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(mrkdwn("*Evidence* (latest analysis, candidate against champion)"), ev, nil))
	}
	var who []string
	for _, a := range ap.Approvers {
		who = append(who, mention(a))
	}
	for _, g := range ap.Groups {
		who = append(who, "<!subteam^"+g+">")
	}
	rules := "*Approvers:* " + strings.Join(who, ", ")
	if len(who) == 0 {
		rules = "*Approvers:* anyone"
	}
	if ap.Quorum > 1 {
		rules += fmt.Sprintf(" · *quorum* %d", ap.Quorum)
	}
	if ap.FourEyes {
		rules += " · *four eyes*: " + orUnknown(ap.StartedBy) + " started it and may not approve"
	}
	if ap.Unsigned {
		rules += " · :warning: *unsigned*: names are self-asserted (approval.unsigned)"
	}
	ctx := []slack.MixedElement{mrkdwn(rules)}
	if link := reportLink(l.report, m); link != "" {
		ctx = append(ctx, mrkdwn("<"+link+"|The evidence: release report>"))
	}
	if link := webLink(l.webUI, m); link != "" {
		ctx = append(ctx, mrkdwn("<"+link+"|Open the release in the Temporal Web UI>"))
	}
	blocks = append(blocks, slack.NewContextBlock("", ctx...))
	for _, d := range ap.Decisions {
		blocks = append(blocks, slack.NewContextBlock("", mrkdwn(decidedLine(d))))
	}
	if !ap.Closed {
		blocks = append(blocks, decideButtons(target{Model: m.Model, Run: m.RunID}))
	}
	return blocks
}

func decideButtons(t target) *slack.ActionBlock {
	approve := slack.NewButtonBlockElement(ActionApprove, t.value(), plain("Approve"))
	approve.Style = slack.StylePrimary
	approve.Confirm = slack.NewConfirmationBlockObject(plain("Approve the release?"),
		mrkdwn(fmt.Sprintf("Promote *%s* to 100%% of traffic and make it the champion.", t.Model)), plain("Approve"), plain("Cancel"))
	reject := slack.NewButtonBlockElement(ActionReject, t.value(), plain("Reject"))
	reject.Style = slack.StyleDanger
	reject.Confirm = slack.NewConfirmationBlockObject(plain("Reject the release?"),
		mrkdwn(fmt.Sprintf("Roll *%s* back: candidate traffic to 0, the champion stays.", t.Model)), plain("Reject"), plain("Cancel"))
	return slack.NewActionBlock(blockDecide, approve, reject)
}

// mention shows a Slack user ID as a mention and any other name as it is.
func mention(who string) string {
	if len(who) > 1 && (who[0] == 'U' || who[0] == 'W') && strings.ToUpper(who) == who {
		return "<@" + who + ">"
	}
	return who
}

func decidedLine(d notify.Decided) string {
	verb := map[string]string{workflows.Approve: ":white_check_mark: Approved", workflows.Reject: ":x: Rejected", workflows.Abort: ":octagonal_sign: Aborted"}[d.Kind]
	if verb == "" {
		verb = d.Kind
	}
	s := verb + " by " + mention(d.Who)
	if d.Name != "" && d.Name != d.Who {
		s += " (" + d.Name + ")"
	}
	if d.Source != "" {
		s += " via " + d.Source
	}
	if d.Comment != "" {
		s += ": " + d.Comment
	}
	switch {
	case d.Key != "":
		s += " · key `" + d.Key + "`"
	case d.Unsigned:
		s += " · _unsigned_"
	}
	return s
}

// fallback is the plain text of a message, for notifications and clients without
// blocks.
func fallback(m notify.Message) string {
	switch m.Kind {
	case notify.KindRelease:
		return title(m)
	case notify.KindApproval:
		return fmt.Sprintf("Approval needed: %s version %s", m.Model, orUnknown(m.Candidate))
	}
	return fmt.Sprintf("%s %s: %s", m.Model, orUnknown(m.Stage), m.Text)
}
