// Package activities does a release's I/O: each method is one idempotent step over a
// client from internal/ ("ensure traffic is X"), with its errors classified as
// retryable or not, so the workflow's retry policies do the right thing.
package activities

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/scoring"
)

// Error types that retrying cannot fix; the workflow fails the stage at once.
const (
	ErrTypeNotFound      = "NotFound"
	ErrTypeInvalid       = "Invalid"
	ErrTypeQueryRejected = "QueryRejected"
)

// MetricSource reads one number from a metrics backend (Prometheus).
type MetricSource interface {
	// Value returns nil for no data, an error wrapping analysis.ErrQueryRejected for a
	// query the backend refuses, and other errors when it cannot be reached.
	Value(ctx context.Context, query string, at time.Time) (*float64, error)
}

// Activities holds the clients every activity uses.
type Activities struct {
	Registry registry.Registry
	Deployer deploy.Deployer
	Metrics  MetricSource
	Scoring  *scoring.Client
	Notifier notify.Notifier
	// Rounds runs bakes' analysis rounds (AnalyzeRounds); the worker starts it.
	Rounds *RoundClock
}

func nonRetryable(errType string, err error) error {
	// The message carries err in full; as a Cause it would repeat in every rendering.
	return temporal.NewApplicationErrorWithOptions(err.Error(), errType, temporal.ApplicationErrorOptions{NonRetryable: true})
}

// classify turns a library error into a non-retryable application error where
// retrying cannot help, and leaves the others retryable.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, deploy.ErrNotFound):
		return nonRetryable(ErrTypeNotFound, err)
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, deploy.ErrInvalid), errors.Is(err, deploy.ErrUnauthorized):
		return nonRetryable(ErrTypeInvalid, err)
	case errors.Is(err, analysis.ErrQueryRejected):
		return nonRetryable(ErrTypeQueryRejected, err)
	}
	return err
}

// ResolveInput names the release's model and candidate version.
type ResolveInput struct {
	Model string `json:"model"`
	// Candidate is a version; empty means the version the `challenger` alias names.
	Candidate string `json:"candidate"`
}

// Resolved is the champion and candidate the release works on.
type Resolved struct {
	Champion  registry.Version `json:"champion"`
	Candidate registry.Version `json:"candidate"`
}

// Resolve looks up the candidate and the current champion in the registry.
func (a *Activities) Resolve(ctx context.Context, in ResolveInput) (Resolved, error) {
	defer keepAlive(ctx)()
	champion, err := a.Registry.ResolveAlias(ctx, in.Model, registry.AliasChampion)
	if err != nil {
		return Resolved{}, classify(fmt.Errorf("resolve the champion of model %q (set the %q alias on a version first): %w", in.Model, registry.AliasChampion, err))
	}
	var candidate registry.Version
	if in.Candidate == "" {
		candidate, err = a.Registry.ResolveAlias(ctx, in.Model, registry.AliasChallenger)
	} else {
		candidate, err = a.Registry.GetVersion(ctx, in.Model, in.Candidate)
	}
	if err != nil {
		return Resolved{}, classify(fmt.Errorf("resolve candidate version %q of model %q: %w", in.Candidate, in.Model, err))
	}
	switch {
	case candidate.Version == champion.Version:
		return Resolved{}, nonRetryable(ErrTypeInvalid, fmt.Errorf("candidate version %q of model %q is already the champion", candidate.Version, in.Model))
	case candidate.Endpoint == "":
		return Resolved{}, nonRetryable(ErrTypeInvalid, fmt.Errorf("candidate version %q of model %q has no serving endpoint in the registry", candidate.Version, in.Model))
	case champion.Endpoint == "":
		return Resolved{}, nonRetryable(ErrTypeInvalid, fmt.Errorf("champion version %q of model %q has no serving endpoint in the registry", champion.Version, in.Model))
	}
	return Resolved{Champion: champion, Candidate: candidate}, nil
}

// NamedQuery is a rendered metric query.
type NamedQuery struct {
	Metric string `json:"metric"`
	Query  string `json:"query"`
	// Buckets marks a histogram query: one series per "le".
	Buckets bool `json:"buckets,omitempty"`
}

// CheckQueries runs every query once, so that a query the metrics backend rejects
// fails the release before any traffic moves. Empty results are fine here.
func (a *Activities) CheckQueries(ctx context.Context, queries []NamedQuery) error {
	defer keepAlive(ctx)()
	now := time.Now()
	for _, q := range queries {
		var err error
		if bs, ok := a.Metrics.(BucketSource); ok && q.Buckets {
			_, err = bs.Buckets(ctx, q.Query, now)
		} else {
			_, err = a.Metrics.Value(ctx, q.Query, now)
		}
		if err != nil {
			return classify(fmt.Errorf("metric %s: %w", q.Metric, err))
		}
	}
	return nil
}

// SetTraffic ensures the data plane routes the model as desired.
func (a *Activities) SetTraffic(ctx context.Context, t deploy.Traffic) (deploy.Applied, error) {
	defer keepAlive(ctx)()
	applied, err := a.Deployer.Apply(ctx, t)
	if err != nil {
		return deploy.Applied{}, classify(fmt.Errorf("set traffic of model %s to candidate %d%%, shadow %d%%: %w", t.Model, t.CandidateWeight, t.ShadowShare, err))
	}
	activity.GetLogger(ctx).Info("traffic applied", "model", t.Model, "candidateWeight", t.CandidateWeight, "shadowShare", t.ShadowShare, "revision", applied.Revision)
	return applied, nil
}

// EvaluateInput is a staging evaluation of both versions on one dataset.
type EvaluateInput struct {
	Dataset   string `json:"dataset"`
	Champion  string `json:"champion"`
	Candidate string `json:"candidate"`
}

// EvaluateOutput holds the evaluation of both versions.
type EvaluateOutput struct {
	Champion  analysis.StagingReport `json:"champion"`
	Candidate analysis.StagingReport `json:"candidate"`
}

// EvaluateStaging sends the evaluation set to the candidate and the champion. It
// heartbeats its progress (rows done, shown in the Web UI's pending activity) every
// second, and a retry after a lost worker resumes from the last heartbeat instead of
// sending the scored rows again.
func (a *Activities) EvaluateStaging(ctx context.Context, in EvaluateInput) (EvaluateOutput, error) {
	ds, err := scoring.LoadCSV(in.Dataset)
	if err != nil {
		return EvaluateOutput{}, nonRetryable(ErrTypeInvalid, fmt.Errorf("evaluation set: %w", err))
	}
	var cp StagingProgress
	if activity.IsActivity(ctx) && activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, &cp); err != nil || cp.Dataset != in.Dataset || cp.Rows != len(ds.Rows) {
			cp = StagingProgress{} // another set, or unreadable: start over
		}
	}
	cp.Dataset, cp.Rows = in.Dataset, len(ds.Rows)

	var mu sync.Mutex
	beat := func() {
		if activity.IsActivity(ctx) {
			mu.Lock()
			defer mu.Unlock()
			activity.RecordHeartbeat(ctx, cp)
		}
	}
	// The SDK sends the latest details at most every few seconds; the ticker keeps
	// heartbeats going while a slow model server answers nothing.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				beat()
			}
		}
	}()
	beat()

	for _, arm := range []struct {
		name     string
		endpoint string
		progress *scoring.Progress
	}{{"candidate", in.Candidate, &cp.Candidate}, {"champion", in.Champion, &cp.Champion}} {
		var last time.Time
		opts := scoring.EvaluateOptions{Checkpoint: func(p scoring.Progress) {
			mu.Lock()
			*arm.progress = p
			cp.Phase = arm.name
			mu.Unlock()
			// At most five a second: encoding the details is not free at 100,000 rows.
			if time.Since(last) >= 200*time.Millisecond {
				last = time.Now()
				beat()
			}
		}}
		mu.Lock()
		from := *arm.progress
		mu.Unlock()
		p, err := scoring.Evaluate(ctx, a.Scoring, arm.endpoint, ds, from, opts)
		mu.Lock()
		*arm.progress = p
		mu.Unlock()
		if err != nil {
			return EvaluateOutput{}, fmt.Errorf("evaluate %s at %s: %w", arm.name, arm.endpoint, err)
		}
		beat()
	}
	out := EvaluateOutput{Candidate: stagingReport(cp.Candidate.Tally), Champion: stagingReport(cp.Champion.Tally)}
	for _, r := range []struct {
		name string
		rep  analysis.StagingReport
	}{{"candidate", out.Candidate}, {"champion", out.Champion}} {
		if r.rep.N == 0 {
			return EvaluateOutput{}, fmt.Errorf("evaluate %s: %w: %d of %d (by status: %v); is the model server up and serving this dataset's columns?",
				r.name, analysis.ErrAllRequestsFailed, r.rep.Errors, r.rep.Requests, r.rep.ErrorsByStatus)
		}
	}
	return out, nil
}

// StagingProgress is EvaluateStaging's heartbeat: both arms' progress, bounded
// whatever the evaluation set's size.
type StagingProgress struct {
	Dataset string `json:"dataset"`
	Rows    int    `json:"rows"`
	// Phase is the arm being evaluated: candidate, then champion.
	Phase     string           `json:"phase"`
	Candidate scoring.Progress `json:"candidate"`
	Champion  scoring.Progress `json:"champion"`
}

// stagingReport turns an evaluation's tally into the staging gates' evidence.
func stagingReport(t scoring.Tally) analysis.StagingReport {
	r := analysis.StagingReport{Requests: t.Requests, N: t.N, Correct: t.Correct, Errors: t.Errors,
		PerClass: map[string]analysis.ClassAccuracy{}}
	if len(t.ErrorsByKind) > 0 {
		r.ErrorsByStatus = t.ErrorsByKind
	}
	for class, c := range t.PerClass {
		r.PerClass[class] = analysis.ClassAccuracy{N: c[0], Correct: c[1]}
	}
	if t.N > 0 {
		r.Accuracy = float64(t.Correct) / float64(t.N)
		r.P50 = t.Latency.Quantile(0.50)
		r.P99 = t.Latency.Quantile(0.99)
	}
	return r
}

// AnalyzeInput is one round of measurements of a model's candidate against its
// champion.
type AnalyzeInput struct {
	Model     string        `json:"model"`
	Champion  string        `json:"champion"`
	Candidate string        `json:"candidate"`
	Interval  plan.Duration `json:"interval"`
	Metrics   []plan.Metric `json:"metrics"`
	// Since is when the judged stage started: rate, latency and drift judges count
	// from there. States are their evidence so far, by metric name, as the previous
	// round returned it (Measurement.State); a metric without one starts from the
	// counters' values at Since.
	Since  time.Time                      `json:"since,omitzero"`
	States map[string]analysis.JudgeState `json:"states,omitempty"`
}

// BucketSource reads histogram buckets (one series per "le") from a metrics backend;
// the latency and drift judges need it. Prometheus implements it.
type BucketSource interface {
	Buckets(ctx context.Context, query string, at time.Time) (map[string]float64, error)
}

// Analyze measures every metric once for the candidate (and the champion, as
// evidence) and judges it. A backend that cannot be reached gives an Error verdict,
// not a failed metric; the stage's tally limits those.
func (a *Activities) Analyze(ctx context.Context, in AnalyzeInput) ([]analysis.Measurement, error) {
	defer keepAlive(ctx)()
	now := time.Now().UTC()
	window := plan.PromDuration(in.Interval.D())
	out := make([]analysis.Measurement, 0, len(in.Metrics))
	for _, m := range in.Metrics {
		q, err := plan.Render(m.Query, plan.QueryVars{Model: in.Model, Variant: deploy.Candidate, Version: in.Candidate, Interval: window})
		if err != nil {
			return nil, nonRetryable(ErrTypeInvalid, fmt.Errorf("metric %s: %w", m.Name, err))
		}
		bq, err := plan.Render(m.Query, plan.QueryVars{Model: in.Model, Variant: deploy.Champion, Version: in.Champion, Interval: window})
		if err != nil {
			return nil, nonRetryable(ErrTypeInvalid, fmt.Errorf("metric %s: %w", m.Name, err))
		}
		meas := analysis.Measurement{Metric: m.Name, Judge: m.Judge, Query: q, BaselineQuery: bq, At: now}
		if m.Sequential() {
			meas, err := a.judgeCounts(ctx, in, m, meas)
			if err != nil {
				return nil, err
			}
			out = append(out, meas)
			continue
		}
		v, err := a.Metrics.Value(ctx, q, now)
		switch {
		case errors.Is(err, analysis.ErrQueryRejected):
			return nil, classify(fmt.Errorf("metric %s: %w", m.Name, err))
		case err != nil:
			meas.Verdict, meas.Message = analysis.Error, err.Error()
		default:
			meas.Value = v
			meas.Verdict, meas.Message = analysis.JudgeThreshold(m, v)
			if m.SampleQuery != "" && meas.Verdict != analysis.Error {
				// The window's sample (plan.Metric.SampleQuery): too few is no data.
				sq, err := plan.Render(m.SampleQuery, plan.QueryVars{Model: in.Model, Variant: deploy.Candidate, Version: in.Candidate, Interval: window})
				if err != nil {
					return nil, nonRetryable(ErrTypeInvalid, fmt.Errorf("metric %s: %w", m.Name, err))
				}
				switch n, err := a.Metrics.Value(ctx, sq, now); {
				case errors.Is(err, analysis.ErrQueryRejected):
					return nil, classify(fmt.Errorf("metric %s: %w", m.Name, err))
				case err != nil:
					meas.Verdict, meas.Message = analysis.Error, err.Error()
				default:
					meas.Verdict, meas.Message = analysis.JudgeThresholdSample(m, v, n)
				}
			}
			if b, err := a.Metrics.Value(ctx, bq, now); err == nil {
				meas.Baseline = b
			}
		}
		out = append(out, meas)
	}
	return out, nil
}

// judgeCounts reads a rate, latency or drift metric's counters for both arms and
// judges them on the stage's evidence so far. A backend that cannot be reached gives
// an Error verdict and hands the previous state back unchanged.
func (a *Activities) judgeCounts(ctx context.Context, in AnalyzeInput, m plan.Metric, meas analysis.Measurement) (analysis.Measurement, error) {
	window := plan.PromDuration(in.Interval.D())
	queries := map[string]map[string]string{} // arm -> key -> query
	var resolved []string
	for _, arm := range []struct{ variant, version string }{{deploy.Candidate, in.Candidate}, {deploy.Champion, in.Champion}} {
		qs := map[string]string{}
		for i, tmpl := range m.Queries() {
			q, err := plan.Render(tmpl, plan.QueryVars{Model: in.Model, Variant: arm.variant, Version: arm.version, Interval: window})
			if err != nil {
				return meas, nonRetryable(ErrTypeInvalid, fmt.Errorf("metric %s: %w", m.Name, err))
			}
			qs[[]string{analysis.KeyEvents, analysis.KeyTotal}[i]] = q
			resolved = append(resolved, q)
		}
		queries[arm.variant] = qs
	}
	read := func(at time.Time) (analysis.Reading, error) {
		var r analysis.Reading
		for _, arm := range []string{deploy.Candidate, deploy.Champion} {
			c, err := a.readCounts(ctx, m, queries[arm], at)
			if err != nil {
				return r, err
			}
			if arm == deploy.Candidate {
				r.Candidate = c
			} else {
				r.Champion = c
			}
		}
		return r, nil
	}
	prev, ok := in.States[m.Name]
	if ok {
		prev = prev.Clone()
	}
	now := meas.At
	var err error
	var cur analysis.Reading
	if !ok {
		var start analysis.Reading
		since := in.Since
		if since.IsZero() || since.After(now) {
			since = now.Add(-in.Interval.D())
		}
		if start, err = read(since); err == nil {
			prev = analysis.Start(start)
		}
	}
	if err == nil {
		cur, err = read(now)
	}
	switch {
	case errors.Is(err, analysis.ErrQueryRejected):
		return meas, classify(fmt.Errorf("metric %s: %w", m.Name, err))
	case err != nil:
		meas.Verdict, meas.Message = analysis.Error, err.Error()
		if ok {
			meas.State = &prev
		}
		return meas, nil
	}
	verdict, msg, ev, st := analysis.JudgeCounts(m, prev, cur)
	ev.Queries = resolved
	meas.Verdict, meas.Message, meas.Evidence, meas.State = verdict, msg, ev, &st
	if m.Judge == plan.JudgeRate {
		rc, rb := ratio(st.Total.Candidate), ratio(st.Total.Champion)
		meas.Value, meas.Baseline = rc, rb
	}
	return meas, nil
}

// readCounts reads one arm's counters: events and total for a rate, buckets for a
// histogram. An empty result is a count of 0: the series does not exist yet.
func (a *Activities) readCounts(ctx context.Context, m plan.Metric, qs map[string]string, at time.Time) (analysis.Counts, error) {
	c := analysis.Counts{}
	if m.Judge == plan.JudgeRate {
		for _, key := range []string{analysis.KeyEvents, analysis.KeyTotal} {
			v, err := a.Metrics.Value(ctx, qs[key], at)
			if err != nil {
				return nil, err
			}
			if v != nil {
				c[key] = *v
			}
		}
		return c, nil
	}
	bs, ok := a.Metrics.(BucketSource)
	if !ok {
		return nil, nonRetryable(ErrTypeInvalid, fmt.Errorf("metric %s: the %s judge needs histogram buckets, which this metrics backend cannot read", m.Name, m.Judge))
	}
	b, err := bs.Buckets(ctx, qs[analysis.KeyEvents], at)
	if err != nil {
		return nil, err
	}
	for k, v := range b {
		c[k] = v
	}
	return c, nil
}

func ratio(c analysis.Counts) *float64 {
	if c[analysis.KeyTotal] <= 0 {
		return nil
	}
	r := c[analysis.KeyEvents] / c[analysis.KeyTotal]
	return &r
}

// RegistryChange is one idempotent write to the registry: tags and aliases on a
// version, and an audit event.
type RegistryChange struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// SetAliases point these aliases at Version; DeleteAliases remove these aliases.
	SetAliases    []string          `json:"setAliases,omitempty"`
	DeleteAliases []string          `json:"deleteAliases,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
	// Event, when its Kind is set, is recorded once however often the activity runs.
	Event registry.Event `json:"event"`
}

// ChangeRegistry applies c.
func (a *Activities) ChangeRegistry(ctx context.Context, c RegistryChange) error {
	defer keepAlive(ctx)()
	for _, alias := range c.DeleteAliases {
		if err := a.Registry.DeleteAlias(ctx, c.Model, alias); err != nil {
			return classify(fmt.Errorf("delete alias %s of model %s: %w", alias, c.Model, err))
		}
	}
	for _, alias := range c.SetAliases {
		if err := a.Registry.SetAlias(ctx, c.Model, alias, c.Version); err != nil {
			return classify(fmt.Errorf("set alias %s of model %s to version %s: %w", alias, c.Model, c.Version, err))
		}
	}
	if len(c.Tags) > 0 {
		if err := a.Registry.SetTags(ctx, c.Model, c.Version, c.Tags); err != nil {
			return classify(fmt.Errorf("tag version %s of model %s: %w", c.Version, c.Model, err))
		}
	}
	if c.Event.Kind != "" {
		e := c.Event
		info := activity.GetInfo(ctx)
		// The activity ID is the same on every retry of this call and unique within
		// the run, so a retried write records the event once.
		e.Key = info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID + "/" + info.ActivityID
		e.Model, e.Version, e.ReleaseID = c.Model, c.Version, info.WorkflowExecution.ID
		if e.At.IsZero() {
			e.At = time.Now().UTC()
		}
		if err := a.Registry.RecordEvent(ctx, e); err != nil {
			return classify(fmt.Errorf("record %s event for model %s: %w", e.Kind, c.Model, err))
		}
	}
	return nil
}

// Notify tells people about the release. Best-effort: the workflow ignores its errors.
func (a *Activities) Notify(ctx context.Context, m notify.Message) error {
	defer keepAlive(ctx)()
	locate(ctx, &m)
	return a.Notifier.Notify(ctx, m)
}

// Announce posts a message that later ones refer to (the release's opening message,
// the approval request) and returns its reference, which the workflow keeps. A
// notifier that cannot refer to messages just notifies and returns no reference.
// Best-effort, like Notify.
func (a *Activities) Announce(ctx context.Context, m notify.Message) (notify.Ref, error) {
	defer keepAlive(ctx)()
	locate(ctx, &m)
	if an, ok := a.Notifier.(notify.Announcer); ok {
		return an.Announce(ctx, m)
	}
	return notify.Ref{}, a.Notifier.Notify(ctx, m)
}

// locate sets where the release runs, for links, outside the workflow's history.
func locate(ctx context.Context, m *notify.Message) {
	if !activity.IsActivity(ctx) {
		return
	}
	info := activity.GetInfo(ctx)
	m.Namespace, m.RunID = info.WorkflowNamespace, info.WorkflowExecution.RunID
}
