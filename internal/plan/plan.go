// Package plan is the release plan: what a release of one model version must pass on
// its way to production (staging gates, shadow soak, canary steps with analysis,
// approval, post-promotion watch), read from YAML, defaulted and validated before
// anything starts.
package plan

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// Judge kinds a metric may name.
const (
	// JudgeThreshold checks the candidate's value against min and max (Argo Rollouts style).
	JudgeThreshold = "threshold"
	// JudgeRate compares the candidate's event rate (errors per request, incorrect per
	// labelled prediction) with the champion's on counter increments, with an
	// anytime-valid sequential test: it stays right however often it looks.
	JudgeRate = "rate"
	// JudgeLatency tests, anytime-valid, that the candidate's latency quantiles are not
	// above the champion's by more than the tolerance, on histogram buckets.
	JudgeLatency = "latency"
	// JudgeDrift compares the candidate's and the champion's prediction-score
	// histograms by PSI and Jensen-Shannon divergence.
	JudgeDrift = "drift"
)

// Judges lists the judge kinds.
var Judges = []string{JudgeThreshold, JudgeRate, JudgeLatency, JudgeDrift}

// No-data policies: what a measurement with no data means. There is no "pass".
const (
	// NoDataHold counts the measurement as inconclusive; a bake whose metric has no
	// data is extended, interval by interval, up to MaxHolds times, then fails.
	NoDataHold = "hold"
	// NoDataFail counts the measurement as a failure.
	NoDataFail = "fail"
	// NoDataPass counts the measurement as a pass, with a warning in its evidence. Only
	// allowed with the metric's allowNoDataPass flag: missing data hides broken
	// candidates, so a plan must say twice that it wants this.
	NoDataPass = "pass"
)

// What an approval timeout does.
const (
	OnTimeoutRollback = "rollback"
	// OnTimeoutPromote makes the approval window a veto window: nobody objected in
	// time, so the release goes on. Only allowed when approval is not required.
	OnTimeoutPromote = "promote"
)

// Plan is one release plan. Field names follow the YAML file.
type Plan struct {
	// Model is the registered model's name.
	Model string `yaml:"model" json:"model"`
	// Candidate is the version to release; the CLI may override it.
	Candidate     string        `yaml:"candidate" json:"candidate"`
	Staging       Staging       `yaml:"staging" json:"staging"`
	Shadow        Shadow        `yaml:"shadow" json:"shadow"`
	Canary        Canary        `yaml:"canary" json:"canary"`
	Analysis      Analysis      `yaml:"analysis" json:"analysis"`
	Approval      Approval      `yaml:"approval" json:"approval"`
	PostPromotion PostPromotion `yaml:"postPromotion" json:"postPromotion"`
	Pause         Pause         `yaml:"pause" json:"pause"`
	// Deploy is the data plane the release drives: the worker's gateway by default, or
	// a Kubernetes HTTPRoute or KServe InferenceService.
	Deploy deploy.Target `yaml:"deploy" json:"deploy,omitzero"`
}

// Target is the release's data plane for deploy.Traffic: nil for the worker's gateway.
func (p *Plan) Target() *deploy.Target {
	if p.Deploy.IsGateway() {
		return nil
	}
	t := p.Deploy
	return &t
}

// Pause bounds how long a paused release may stay paused.
type Pause struct {
	// Limit is how long a pause lasts before the release rolls back unless resumed.
	// Default 24h.
	Limit Duration `yaml:"limit" json:"limit,omitempty"`
}

// DefaultPauseLimit is the pause limit of a plan that names none.
const DefaultPauseLimit = 24 * time.Hour

// LimitOrDefault is Limit, default 24h.
func (p Pause) LimitOrDefault() time.Duration {
	if p.Limit <= 0 {
		return DefaultPauseLimit
	}
	return p.Limit.D()
}

// Staging validates the candidate on an evaluation set before it sees any traffic.
type Staging struct {
	// Dataset is the evaluation set (CSV, last column "label") as the worker sees it.
	// Empty skips staging validation.
	Dataset string `yaml:"dataset" json:"dataset,omitempty"`
	// MinAccuracy is the absolute accuracy gate (0..1).
	MinAccuracy float64 `yaml:"minAccuracy" json:"minAccuracy"`
	// MaxAccuracyDrop is how far below the champion's accuracy the candidate may be
	// (0..1). Default 0.02.
	MaxAccuracyDrop *float64 `yaml:"maxAccuracyDrop" json:"maxAccuracyDrop"`
	// MaxP99Latency is the candidate's latency gate; zero means none.
	MaxP99Latency Duration `yaml:"maxP99Latency" json:"maxP99Latency"`
	// MaxErrorRate is the share of evaluation requests that may fail. Default 0.
	MaxErrorRate float64 `yaml:"maxErrorRate" json:"maxErrorRate"`
	// MaxClassAccuracyDrop is how far below the champion's accuracy on each true class
	// the candidate may be (0..1); nil means no per-class gate.
	MaxClassAccuracyDrop *float64 `yaml:"maxClassAccuracyDrop" json:"maxClassAccuracyDrop,omitempty"`
	// MaxP99LatencyIncrease is how much slower than the champion's p99 latency the
	// candidate's may be, relative (0.2: 20%); zero means no relative latency gate.
	MaxP99LatencyIncrease float64 `yaml:"maxP99LatencyIncrease" json:"maxP99LatencyIncrease,omitempty"`
}

// Shadow mirrors live traffic to the candidate; users get the champion's answers.
type Shadow struct {
	// Share is the percentage (1..100) of requests mirrored. Zero skips the shadow soak.
	Share int `yaml:"share" json:"share"`
	// Duration is how long the soak lasts.
	Duration Duration `yaml:"duration" json:"duration"`
	// Metrics gate the soak; empty means the analysis metrics (ShadowMetrics).
	Metrics []Metric `yaml:"metrics" json:"metrics"`
}

// ShadowMetrics are the metrics that gate the shadow soak.
func (p *Plan) ShadowMetrics() []Metric {
	if len(p.Shadow.Metrics) > 0 {
		return p.Shadow.Metrics
	}
	return p.Analysis.Metrics
}

// WatchMetrics are the metrics of the post-promotion watch.
func (p *Plan) WatchMetrics() []Metric {
	if len(p.PostPromotion.Metrics) > 0 {
		return p.PostPromotion.Metrics
	}
	return p.Analysis.Metrics
}

// Canary shifts live traffic to the candidate step by step.
type Canary struct {
	Steps []Step `yaml:"steps" json:"steps"`
}

// Step sets the candidate's share of live traffic and bakes it.
type Step struct {
	// Weight is the candidate's percentage of live traffic, 1..100, strictly rising.
	Weight int `yaml:"weight" json:"weight"`
	// Bake is how long the step is analysed before the next one.
	Bake Duration `yaml:"bake" json:"bake"`
}

// Analysis says how canary and watch stages are analysed.
type Analysis struct {
	// Interval between measurements. Default 1m.
	Interval Duration `yaml:"interval" json:"interval"`
	// Alpha is the release's error budget: the chance that a candidate as good as
	// the champion (within each metric's tolerance) is rolled back by any
	// statistical judge (rate, latency, drift) of the shadow soak, the canary or the
	// watch, however long they run. Default 0.05. Each judge gets a share (Budget).
	Alpha   float64  `yaml:"alpha" json:"alpha,omitempty"`
	Metrics []Metric `yaml:"metrics" json:"metrics"`
}

// Metric is one check, measured every interval by the judge it names.
type Metric struct {
	Name string `yaml:"name" json:"name"`
	// Judge is the judge kind: "threshold" (default), "rate", "latency" or "drift".
	Judge string `yaml:"judge" json:"judge"`
	// Query is PromQL with template fields {{.Model}}, {{.Variant}}, {{.Version}} and
	// {{.Interval}} (the analysis interval as a PromQL duration). Threshold: one
	// number. Rate: the cumulative count of events, one series (sum of a counter,
	// e.g. 5xx requests). Latency and drift: cumulative histogram buckets, one series
	// per "le" label (sum by (le) of a _bucket counter).
	Query string `yaml:"query" json:"query"`
	// TotalQuery is the rate judge's cumulative count of trials (requests, labelled
	// predictions), the denominator of the rate; same template fields.
	TotalQuery string `yaml:"totalQuery" json:"totalQuery,omitempty"`
	// Min and Max bound the candidate's value (threshold judge); at least one is set.
	Min *float64 `yaml:"min" json:"min,omitempty"`
	Max *float64 `yaml:"max" json:"max,omitempty"`
	// Tolerance is the relative increase the rate judge tolerates (0.1: the candidate's
	// rate may be up to 10% above the champion's), or the relative slowdown of each
	// latency quantile the latency judge tolerates. Default 0.
	Tolerance float64 `yaml:"tolerance" json:"tolerance,omitempty"`
	// Alpha is this statistical judge's share of the release's error budget
	// (analysis.alpha): the chance that it ever fails a candidate as good as the
	// champion (within the tolerance), however often it looks. Unset, the judges
	// share the budget equally (Plan.Budget); the shares may not add up to more.
	Alpha float64 `yaml:"alpha" json:"alpha,omitempty"`
	// BucketGrowth is the latency judge's histogram resolution: the largest ratio
	// between neighbouring bucket bounds near the quantiles. Default 2^(1/8) (the
	// gateway's native histogram, schema 3), or 2.5 when the query reads classic
	// _bucket series (the gateway's classic bounds ..., 0.1, 0.25, 0.5, 1, ...). A
	// tolerance finer than the buckets is refused.
	BucketGrowth float64 `yaml:"bucketGrowth" json:"bucketGrowth,omitempty"`
	// Quantiles are the latency judge's quantiles. Default [0.5, 0.99].
	Quantiles []float64 `yaml:"quantiles" json:"quantiles,omitempty"`
	// MaxPSI and MaxJS bound the drift judge's population stability index (default
	// 0.25; 0.1 is the conventional "watch" level) and Jensen-Shannon divergence
	// (base 2, 0..1; default 0.1).
	MaxPSI *float64 `yaml:"maxPSI" json:"maxPSI,omitempty"`
	MaxJS  *float64 `yaml:"maxJS" json:"maxJS,omitempty"`
	// MinSamples is the candidate's sample size (requests, labelled predictions,
	// histogram observations) a rate, latency or drift judge needs since the stage
	// started before it may pass; below it the measurement holds. Default 100. For a
	// threshold judge with a SampleQuery, the sample its window needs.
	MinSamples *int `yaml:"minSamples" json:"minSamples,omitempty"`
	// SampleQuery is a threshold judge's sample in the window its query reads (e.g.
	// sum(increase(mlrelease_gateway_requests_total{...}[{{.Interval}}]))): a window
	// with fewer than MinSamples is no data, so that a p99 of fifteen requests (the
	// slowest one) cannot fail a release.
	SampleQuery string `yaml:"sampleQuery" json:"sampleQuery,omitempty"`
	// FailureLimit is how many failed measurements a stage tolerates. Default 0.
	FailureLimit int `yaml:"failureLimit" json:"failureLimit"`
	// ConsecutiveErrorLimit is how many provider errors in a row (Prometheus
	// unreachable) a stage tolerates; they are not metric failures. Default 4.
	ConsecutiveErrorLimit *int `yaml:"consecutiveErrorLimit" json:"consecutiveErrorLimit"`
	// InconclusiveLimit is how many inconclusive (held) measurements a stage tolerates
	// before it fails; nil means no limit beyond MaxHolds.
	InconclusiveLimit *int `yaml:"inconclusiveLimit" json:"inconclusiveLimit,omitempty"`
	// NoData is the no-data policy: "hold" (default), "fail", or "pass" (only with
	// AllowNoDataPass, and then with a warning in the evidence).
	NoData string `yaml:"noData" json:"noData"`
	// AllowNoDataPass confirms noData "pass".
	AllowNoDataPass bool `yaml:"allowNoDataPass" json:"allowNoDataPass,omitempty"`
	// MaxHolds is how many intervals a bake may be extended while this metric has
	// no data or too small a sample (policy "hold"). Default 3.
	MaxHolds *int `yaml:"maxHolds" json:"maxHolds"`
}

// Sequential reports whether the metric's judge accumulates evidence across
// intervals (from counters), rather than judging each interval's value alone.
func (m Metric) Sequential() bool {
	return m.Judge == JudgeRate || m.Judge == JudgeLatency || m.Judge == JudgeDrift
}

// Queries are the metric's query templates.
func (m Metric) Queries() []string {
	switch {
	case m.TotalQuery != "":
		return []string{m.Query, m.TotalQuery}
	case m.SampleQuery != "":
		return []string{m.Query, m.SampleQuery}
	}
	return []string{m.Query}
}

// AlphaOrDefault is Alpha, default 0.05.
func (m Metric) AlphaOrDefault() float64 {
	if m.Alpha == 0 {
		return 0.05
	}
	return m.Alpha
}

// MinSampleSize is MinSamples, default 100.
func (m Metric) MinSampleSize() int {
	if m.MinSamples == nil {
		return 100
	}
	return *m.MinSamples
}

// QuantilesOrDefault is Quantiles, default [0.5, 0.99].
func (m Metric) QuantilesOrDefault() []float64 {
	if len(m.Quantiles) == 0 {
		return []float64{0.5, 0.99}
	}
	return m.Quantiles
}

// PSILimit is MaxPSI, default 0.25.
func (m Metric) PSILimit() float64 {
	if m.MaxPSI == nil {
		return 0.25
	}
	return *m.MaxPSI
}

// JSLimit is MaxJS, default 0.1.
func (m Metric) JSLimit() float64 {
	if m.MaxJS == nil {
		return 0.1
	}
	return *m.MaxJS
}

// Approval is the human decision before promotion.
type Approval struct {
	// Required makes promotion wait for an allowed approver's approval.
	Required bool `yaml:"required" json:"required"`
	// Approvers may approve or reject; empty means anyone (only when not required).
	Approvers []string `yaml:"approvers" json:"approvers"`
	// Timeout is how long to wait for a decision: default 24h when required. When not
	// required, a positive timeout opens a veto window and zero skips the stage.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// OnTimeout is "rollback" (default when required) or "promote" (default, and only
	// allowed, when not required).
	OnTimeout string `yaml:"onTimeout" json:"onTimeout"`
	// ApproverGroups are user groups (Slack user group IDs, S...) whose members may
	// approve or reject, beside the Approvers. The client that sends a decision says
	// which groups its user belongs to (the Slack handler asks Slack).
	ApproverGroups []string `yaml:"approverGroups" json:"approverGroups,omitempty"`
	// FourEyes refuses an approval from whoever started the release.
	FourEyes bool `yaml:"fourEyes" json:"fourEyes,omitempty"`
	// Quorum is how many distinct approvers must approve before promotion. Zero means 1.
	Quorum int `yaml:"quorum" json:"quorum,omitempty"`
	// AllowedSigners is an allowed-signers file (ssh-keygen's format, as git's
	// gpg.ssh.allowedSignersFile; relative to the plan's folder) naming the keys whose
	// signed decisions the release trusts, beside the worker's MLRELEASE_ALLOWED_SIGNERS.
	// The starter reads it into the release, which keeps it as it was at the start.
	AllowedSigners string `yaml:"allowedSigners" json:"allowedSigners,omitempty"`
	// Unsigned takes decisions on the name the caller types, with no signature: anyone
	// who reaches Temporal can then decide as anyone. Status, Slack and the registry
	// label such a release; a worker with allowed signers of its own ignores it.
	Unsigned bool `yaml:"unsigned" json:"unsigned,omitempty"`
}

// Needed is how many distinct approvals promotion waits for.
func (a Approval) Needed() int { return max(a.Quorum, 1) }

// Waits reports whether the release stops for a human decision before promotion.
func (a Approval) Waits() bool { return a.Required || a.Timeout > 0 }

// Allows reports whether who, a member of groups, may approve or reject.
func (a Approval) Allows(who string, groups ...string) bool {
	if who == "" {
		return false
	}
	if len(a.Approvers) == 0 && len(a.ApproverGroups) == 0 {
		return !a.Required
	}
	for _, w := range a.Approvers {
		if w == who {
			return true
		}
	}
	for _, g := range a.ApproverGroups {
		for _, member := range groups {
			if g == member {
				return true
			}
		}
	}
	return false
}

// PostPromotion watches the new champion with the old one kept warm.
type PostPromotion struct {
	// Watch is how long; zero skips the watch.
	Watch Duration `yaml:"watch" json:"watch"`
	// Holdout is the percentage of live traffic the old champion keeps serving
	// during the watch, so that the statistical judges go on comparing both
	// versions in the same intervals (a busy hour or a drift moves both alike).
	// Default 5, at most 100 minus the last canary step's weight.
	Holdout *int `yaml:"holdout" json:"holdout,omitempty"`
	// Metrics: empty means the analysis metrics (WatchMetrics).
	Metrics []Metric `yaml:"metrics" json:"metrics"`
}

// Load reads, defaults and validates a plan file.
func Load(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

// Parse decodes YAML strictly (an unknown field is an error), applies defaults and
// validates.
func Parse(b []byte) (*Plan, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Plan
	if err := dec.Decode(&p); err != nil {
		return nil, yamlErrors(err)
	}
	p.Default()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Default fills every optional field that is unset.
func (p *Plan) Default() {
	if p.Staging.MaxAccuracyDrop == nil {
		d := 0.02
		p.Staging.MaxAccuracyDrop = &d
	}
	if p.Analysis.Interval == 0 {
		p.Analysis.Interval = Duration(time.Minute)
	}
	if p.Pause.Limit == 0 {
		p.Pause.Limit = Duration(DefaultPauseLimit)
	}
	if len(p.Canary.Steps) == 0 {
		p.Canary.Steps = []Step{{Weight: 10, Bake: Duration(5 * time.Minute)}, {Weight: 50, Bake: Duration(5 * time.Minute)}}
	}
	for i := range p.Analysis.Metrics {
		p.Analysis.Metrics[i].defaults()
	}
	for i := range p.Shadow.Metrics {
		p.Shadow.Metrics[i].defaults()
	}
	for i := range p.PostPromotion.Metrics {
		p.PostPromotion.Metrics[i].defaults()
	}
	p.defaultBudget()
	// A required approval waits a day by default and rolls back when nobody decides.
	// An optional one with a timeout is a veto window: silence means go on.
	if p.Approval.Required && p.Approval.Timeout == 0 {
		p.Approval.Timeout = Duration(24 * time.Hour)
	}
	if p.Approval.OnTimeout == "" {
		p.Approval.OnTimeout = OnTimeoutRollback
		if !p.Approval.Required {
			p.Approval.OnTimeout = OnTimeoutPromote
		}
	}
}

// ErrorLimit is ConsecutiveErrorLimit, default 4; 0 fails at the first provider error.
func (m Metric) ErrorLimit() int {
	if m.ConsecutiveErrorLimit == nil {
		return 4
	}
	return *m.ConsecutiveErrorLimit
}

// HoldLimit is MaxHolds, default 3; 0 never extends a stage for missing data.
func (m Metric) HoldLimit() int {
	if m.MaxHolds == nil {
		return 3
	}
	return *m.MaxHolds
}

func intp(i int) *int { return &i }

func (m *Metric) defaults() {
	if m.Judge == "" {
		m.Judge = JudgeThreshold
	}
	if m.ConsecutiveErrorLimit == nil {
		m.ConsecutiveErrorLimit = intp(4)
	}
	if m.NoData == "" {
		m.NoData = NoDataHold
	}
	if m.MaxHolds == nil {
		m.MaxHolds = intp(3)
	}
}

// Validate reports every problem, each naming the field and its value.
func (p *Plan) Validate() error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if !ValidName(p.Model) {
		bad("model", "%q must be non-empty letters, digits, '.', '_' or '-'", p.Model)
	}
	if p.Candidate != "" && !ValidName(p.Candidate) {
		bad("candidate", "%q must be letters, digits, '.', '_' or '-'", p.Candidate)
	}

	s := p.Staging
	if s.MinAccuracy < 0 || s.MinAccuracy > 1 {
		bad("staging.minAccuracy", "%v is outside 0..1", s.MinAccuracy)
	}
	if s.MaxAccuracyDrop != nil && (*s.MaxAccuracyDrop < 0 || *s.MaxAccuracyDrop > 1) {
		bad("staging.maxAccuracyDrop", "%v is outside 0..1", *s.MaxAccuracyDrop)
	}
	if s.MaxP99Latency < 0 {
		bad("staging.maxP99Latency", "%s must not be negative", s.MaxP99Latency)
	}
	if s.MaxErrorRate < 0 || s.MaxErrorRate > 1 {
		bad("staging.maxErrorRate", "%v is outside 0..1", s.MaxErrorRate)
	}
	if d := s.MaxClassAccuracyDrop; d != nil && (*d < 0 || *d > 1) {
		bad("staging.maxClassAccuracyDrop", "%v is outside 0..1", *d)
	}
	if s.MaxP99LatencyIncrease < 0 {
		bad("staging.maxP99LatencyIncrease", "%v must not be negative", s.MaxP99LatencyIncrease)
	}

	if p.Pause.Limit < 0 {
		bad("pause.limit", "%s must not be negative", p.Pause.Limit)
	}

	if p.Shadow.Share < 0 || p.Shadow.Share > 100 {
		bad("shadow.share", "%d is outside 0..100", p.Shadow.Share)
	}
	for _, problem := range p.Deploy.Problems("deploy") {
		errs = append(errs, errors.New(problem))
	}
	if p.Deploy.Kind == deploy.KindInferenceService && p.Shadow.Share > 0 {
		bad("shadow.share", "%d: deploy.kind %s cannot mirror traffic (KServe has no mirror); set it to 0 or route through an httproute", p.Shadow.Share, p.Deploy.Kind)
	}
	if p.Shadow.Share > 0 && p.Shadow.Duration <= 0 {
		bad("shadow.duration", "%s must be positive when shadow.share is %d", p.Shadow.Duration, p.Shadow.Share)
	}
	if p.Shadow.Duration < 0 {
		bad("shadow.duration", "%s must not be negative", p.Shadow.Duration)
	}

	prev := 0
	for i, st := range p.Canary.Steps {
		f := fmt.Sprintf("canary.steps[%d]", i)
		switch {
		case st.Weight < 1 || st.Weight > 100:
			bad(f+".weight", "%d is outside 1..100", st.Weight)
		case st.Weight <= prev:
			bad(f+".weight", "%d does not rise above the previous step's %d", st.Weight, prev)
		}
		if st.Weight > prev {
			prev = st.Weight
		}
		if st.Bake <= 0 {
			bad(f+".bake", "%s must be positive", st.Bake)
		}
	}

	if p.Analysis.Interval <= 0 {
		bad("analysis.interval", "%s must be positive", p.Analysis.Interval)
	}
	if len(p.Analysis.Metrics) == 0 {
		bad("analysis.metrics", "is empty: a canary needs at least one metric to judge it")
	}
	for _, set := range []struct {
		field   string
		metrics []Metric
	}{{"analysis.metrics", p.Analysis.Metrics}, {"shadow.metrics", p.Shadow.Metrics}, {"postPromotion.metrics", p.PostPromotion.Metrics}} {
		names := map[string]bool{}
		for i, m := range set.metrics {
			f := fmt.Sprintf("%s[%d]", set.field, i)
			if m.Name == "" {
				bad(f+".name", "is empty")
			} else if names[m.Name] {
				bad(f+".name", "%q is used twice", m.Name)
			}
			names[m.Name] = true
			errs = append(errs, m.validate(f)...)
		}
	}

	a := p.Approval
	if a.Required && len(a.Approvers) == 0 && len(a.ApproverGroups) == 0 {
		bad("approval.approvers", "is empty but approval.required is true (name approvers or approverGroups)")
	}
	for i, who := range a.Approvers {
		if strings.TrimSpace(who) == "" {
			bad(fmt.Sprintf("approval.approvers[%d]", i), "is empty")
		}
	}
	for i, g := range a.ApproverGroups {
		if strings.TrimSpace(g) == "" {
			bad(fmt.Sprintf("approval.approverGroups[%d]", i), "is empty")
		}
	}
	if a.Unsigned && a.AllowedSigners != "" {
		bad("approval.unsigned", "true conflicts with approval.allowedSigners %q: a release either checks signatures or takes typed names", a.AllowedSigners)
	}
	switch {
	case a.Quorum < 0:
		bad("approval.quorum", "%d must not be negative", a.Quorum)
	case a.Quorum > 1 && len(a.ApproverGroups) == 0 && len(a.Approvers) > 0 && a.Quorum > len(a.Approvers):
		bad("approval.quorum", "%d is more than the %d approvers listed: the release could never be approved", a.Quorum, len(a.Approvers))
	case a.Quorum > 1 && !a.Required && a.Timeout == 0:
		bad("approval.quorum", "%d needs an approval stage: set approval.required or approval.timeout", a.Quorum)
	}
	if a.Timeout < 0 {
		bad("approval.timeout", "%s must not be negative", a.Timeout)
	}
	switch a.OnTimeout {
	case OnTimeoutRollback:
	case OnTimeoutPromote:
		if a.Required {
			bad("approval.onTimeout", "%q is not allowed when approval.required is true: promotion needs an approver", a.OnTimeout)
		}
	default:
		bad("approval.onTimeout", "%q is not one of %q, %q", a.OnTimeout, OnTimeoutRollback, OnTimeoutPromote)
	}

	if p.PostPromotion.Watch < 0 {
		bad("postPromotion.watch", "%s must not be negative", p.PostPromotion.Watch)
	}
	errs = append(errs, p.validateBudget()...)
	return errors.Join(errs...)
}

func (m Metric) validate(f string) []error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{f, field}, args...)...))
	}
	switch m.Judge {
	case JudgeThreshold:
		if m.Min == nil && m.Max == nil {
			bad("max", "is missing: a threshold judge needs min, max or both")
		}
		if m.Min != nil && m.Max != nil && *m.Min > *m.Max {
			bad("min", "%v is above max %v", *m.Min, *m.Max)
		}
	case JudgeRate:
		if strings.TrimSpace(m.TotalQuery) == "" {
			bad("totalQuery", "is empty: a rate judge needs the count of trials (requests) beside the count of events")
		}
	case JudgeLatency:
		for i, q := range m.Quantiles {
			if q <= 0 || q >= 1 {
				bad(fmt.Sprintf("quantiles[%d]", i), "%v is outside (0, 1)", q)
			}
		}
		if g := m.BucketGrowthOrDefault(); g <= 1 {
			bad("bucketGrowth", "%v must be above 1", g)
		} else if m.Tolerance > 0 && m.Tolerance < g-1-1e-9 {
			bad("tolerance", "%v is finer than the histogram's buckets can resolve (bucketGrowth %.4g: neighbouring bounds up to %.0f%% apart); use a tolerance of at least %.3g, or a finer histogram (the gateway's native one: query it without _bucket)", m.Tolerance, g, 100*(g-1), g-1)
		}
	case JudgeDrift:
		if m.PSILimit() <= 0 {
			bad("maxPSI", "%v must be positive", m.PSILimit())
		}
		if m.JSLimit() <= 0 || m.JSLimit() > 1 {
			bad("maxJS", "%v is outside (0, 1]", m.JSLimit())
		}
	default:
		bad("judge", "%q is not a known judge (known: %q)", m.Judge, Judges)
	}
	if m.Judge != JudgeThreshold && (m.Min != nil || m.Max != nil) {
		bad("max", "min and max are for the threshold judge; the %s judge compares the candidate with the champion", m.Judge)
	}
	if m.Judge != JudgeRate && m.TotalQuery != "" {
		bad("totalQuery", "is only for the rate judge")
	}
	if m.Judge != JudgeThreshold && m.SampleQuery != "" {
		bad("sampleQuery", "is only for the threshold judge; the %s judge counts its own sample", m.Judge)
	}
	if m.Tolerance < 0 {
		bad("tolerance", "%v must not be negative", m.Tolerance)
	}
	if m.Judge != JudgeLatency && m.BucketGrowth != 0 {
		bad("bucketGrowth", "is only for the latency judge")
	}
	if m.Alpha < 0 || m.Alpha >= 1 {
		bad("alpha", "%v is outside (0, 1)", m.Alpha)
	}
	if m.MinSampleSize() < 0 {
		bad("minSamples", "%d must not be negative", m.MinSampleSize())
	}
	if m.InconclusiveLimit != nil && *m.InconclusiveLimit < 0 {
		bad("inconclusiveLimit", "%d must not be negative", *m.InconclusiveLimit)
	}
	for _, q := range []struct{ field, query string }{{"query", m.Query}, {"totalQuery", m.TotalQuery}, {"sampleQuery", m.SampleQuery}} {
		if q.field != "query" && q.query == "" {
			continue
		}
		if strings.TrimSpace(q.query) == "" {
			bad(q.field, "is empty")
		} else if _, err := Render(q.query, QueryVars{Model: "m", Variant: "candidate", Version: "1", Interval: "1m"}); err != nil {
			bad(q.field, "%v", err)
		}
	}
	if m.FailureLimit < 0 {
		bad("failureLimit", "%d must not be negative", m.FailureLimit)
	}
	if m.ErrorLimit() < 0 {
		bad("consecutiveErrorLimit", "%d must not be negative", m.ErrorLimit())
	}
	switch m.NoData {
	case NoDataHold, NoDataFail:
		if m.AllowNoDataPass {
			bad("allowNoDataPass", "is true but noData is %q; it only confirms noData %q", m.NoData, NoDataPass)
		}
	case NoDataPass:
		if !m.AllowNoDataPass {
			bad("noData", "%q needs allowNoDataPass: true as well: a metric with no data cannot tell a broken candidate from a good one", m.NoData)
		}
	default:
		bad("noData", "%q is not one of %q, %q, %q", m.NoData, NoDataHold, NoDataFail, NoDataPass)
	}
	if m.HoldLimit() < 0 {
		bad("maxHolds", "%d must not be negative", m.HoldLimit())
	}
	return errs
}

// ValidName reports whether s is a usable model or version name: letters, digits,
// '.', '_' and '-', at most 200 characters. Such names are safe in queries and IDs.
func ValidName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// QueryVars are the fields a metric query may use.
type QueryVars struct {
	Model    string
	Variant  string
	Version  string
	Interval string
}

// Render fills a query template. An unknown field is an error.
func Render(query string, v QueryVars) (string, error) {
	t, err := template.New("query").Option("missingkey=error").Parse(query)
	if err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	return b.String(), nil
}

// PromDuration formats d as a PromQL duration ("90s", "5m", "1h").
func PromDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	default:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
}
