package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrUnavailable means the registry server could not answer (a connection error,
// a 5xx, a 429); retrying later may help, so activities leave it retryable.
var ErrUnavailable = errors.New("registry unavailable")

// Tags that mlrelease reads from and writes to MLflow model versions.
const (
	// TagEndpoint is the version's serving URL (an MLflow scoring server); the
	// adapter maps it to Version.Endpoint.
	TagEndpoint = "mlrelease.endpoint"
	// TagEvent names the latest release event recorded on a version; each event
	// kind keeps its latest occurrence under TagEventPrefix+kind (JSON).
	TagEvent       = "mlrelease.event"
	TagEventPrefix = "mlrelease.event."
	// TagEvidence is a short summary of the latest event's evidence.
	TagEvidence = "mlrelease.evidence"
)

// MaxTagValue bounds what mlrelease writes into one MLflow tag: MLflow 2.x servers
// refuse values over 5,000 characters. Longer values are cut, marked with "…".
const MaxTagValue = 5000

// maxEvidenceSummary keeps TagEvidence readable in MLflow's UI.
const maxEvidenceSummary = 500

// MLflowOptions configures the MLflow adapter. MLflowOptionsFromEnv reads MLflow's
// own variables, so a team's existing MLflow set-up works unchanged.
type MLflowOptions struct {
	// TrackingURI is the MLflow server, e.g. http://127.0.0.1:5000 (MLFLOW_TRACKING_URI).
	TrackingURI string
	// Token is a bearer token (MLFLOW_TRACKING_TOKEN); a secret.
	Token string
	// Username and Password are basic-auth credentials (MLFLOW_TRACKING_USERNAME,
	// MLFLOW_TRACKING_PASSWORD); secrets.
	Username, Password string
	// HTTP is the client to use; default: one with a 30 s timeout.
	HTTP *http.Client
}

// MLflowOptionsFromEnv reads MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN,
// MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.
func MLflowOptionsFromEnv() MLflowOptions {
	return MLflowOptions{
		TrackingURI: os.Getenv("MLFLOW_TRACKING_URI"),
		Token:       os.Getenv("MLFLOW_TRACKING_TOKEN"),
		Username:    os.Getenv("MLFLOW_TRACKING_USERNAME"),
		Password:    os.Getenv("MLFLOW_TRACKING_PASSWORD"),
	}
}

// MLflow is the Registry over an MLflow tracking server's model registry (REST API
// 2.0). Versions are registered by the training pipeline; mlrelease reads them,
// moves the champion and challenger aliases, and tags versions with each release's
// progress and outcome.
//
// RecordEvent has no audit table to write to in MLflow: it tags the version with the
// latest event's kind, that event in JSON under mlrelease.event.<kind> (the latest
// of each kind, bounded to MaxTagValue), and a short evidence summary. The full
// record of every decision stays in the release's workflow history.
type MLflow struct {
	base *url.URL
	o    MLflowOptions
}

var _ Registry = (*MLflow)(nil)

// NewMLflow checks the options; it does not contact the server.
func NewMLflow(o MLflowOptions) (*MLflow, error) {
	if o.TrackingURI == "" {
		return nil, fmt.Errorf("mlflow registry: %w: no tracking URI: set MLFLOW_TRACKING_URI to your MLflow server (http://host:port)", ErrInvalid)
	}
	u, err := url.Parse(o.TrackingURI)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("mlflow registry: %w: MLFLOW_TRACKING_URI %q is not an http(s) URL of an MLflow server", ErrInvalid, o.TrackingURI)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	return &MLflow{base: u, o: o}, nil
}

// Close implements Registry; the adapter holds no connection of its own.
func (m *MLflow) Close() error { return nil }

// mlflowVersion is MLflow's ModelVersion message.
type mlflowVersion struct {
	Name              string      `json:"name"`
	Version           string      `json:"version"`
	CreationTimestamp int64       `json:"creation_timestamp"`
	Source            string      `json:"source"`
	RunID             string      `json:"run_id"`
	Status            string      `json:"status"`
	Description       string      `json:"description"`
	Tags              []mlflowTag `json:"tags"`
	Aliases           []string    `json:"aliases"`
}

type mlflowTag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// UnmarshalJSON accepts creation_timestamp as a number or a string (MLflow's JSON
// encoding of int64 differs between versions).
func (v *mlflowVersion) UnmarshalJSON(b []byte) error {
	type plain mlflowVersion
	var raw struct {
		plain
		CreationTimestamp json.Number `json:"creation_timestamp"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*v = mlflowVersion(raw.plain)
	if raw.CreationTimestamp != "" {
		ms, err := raw.CreationTimestamp.Int64()
		if err != nil {
			return fmt.Errorf("creation_timestamp %q: %w", raw.CreationTimestamp, err)
		}
		v.CreationTimestamp = ms
	}
	return nil
}

func (v mlflowVersion) toVersion() Version {
	out := Version{Model: v.Name, Version: v.Version, CreatedAt: time.UnixMilli(v.CreationTimestamp).UTC()}
	meta := map[string]string{}
	for k, val := range map[string]string{"source": v.Source, "run_id": v.RunID, "status": v.Status, "description": v.Description} {
		if val != "" {
			meta[k] = val
		}
	}
	if len(meta) > 0 {
		out.Metadata = meta
	}
	if len(v.Tags) > 0 {
		out.Tags = make(map[string]string, len(v.Tags))
		for _, t := range v.Tags {
			out.Tags[t.Key] = t.Value
		}
		out.Endpoint = out.Tags[TagEndpoint]
	}
	if len(v.Aliases) > 0 {
		out.Aliases = slices.Sorted(slices.Values(v.Aliases))
	}
	return out
}

// GetVersion implements Registry.
func (m *MLflow) GetVersion(ctx context.Context, model, version string) (Version, error) {
	if err := validateVersion(model, version); err != nil {
		return Version{}, fmt.Errorf("get version: %w", err)
	}
	var resp struct {
		ModelVersion mlflowVersion `json:"model_version"`
	}
	q := url.Values{"name": {model}, "version": {version}}
	if err := m.call(ctx, http.MethodGet, "model-versions/get", q, nil, &resp); err != nil {
		return Version{}, fmt.Errorf("get version %q of model %q: %w", version, model, err)
	}
	return resp.ModelVersion.toVersion(), nil
}

// ResolveAlias implements Registry.
func (m *MLflow) ResolveAlias(ctx context.Context, model, alias string) (Version, error) {
	if err := validateAlias(model, alias); err != nil {
		return Version{}, fmt.Errorf("resolve alias: %w", err)
	}
	var resp struct {
		ModelVersion mlflowVersion `json:"model_version"`
	}
	q := url.Values{"name": {model}, "alias": {alias}}
	if err := m.call(ctx, http.MethodGet, "registered-models/alias", q, nil, &resp); err != nil {
		return Version{}, fmt.Errorf("resolve alias %q of model %q: %w", alias, model, err)
	}
	return resp.ModelVersion.toVersion(), nil
}

// SetAlias implements Registry. An unknown version is ErrNotFound.
func (m *MLflow) SetAlias(ctx context.Context, model, alias, version string) error {
	if err := validateAlias(model, alias); err != nil {
		return fmt.Errorf("set alias: %w", err)
	}
	if err := validateVersion(model, version); err != nil {
		return fmt.Errorf("set alias %q: %w", alias, err)
	}
	body := map[string]string{"name": model, "alias": alias, "version": version}
	if err := m.call(ctx, http.MethodPost, "registered-models/alias", nil, body, nil); err != nil {
		return fmt.Errorf("set alias %q of model %q to version %q: %w", alias, model, version, err)
	}
	return nil
}

// DeleteAlias implements Registry; an absent alias (or model) is not an error.
func (m *MLflow) DeleteAlias(ctx context.Context, model, alias string) error {
	if err := validateAlias(model, alias); err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	body := map[string]string{"name": model, "alias": alias}
	err := m.call(ctx, http.MethodDelete, "registered-models/alias", nil, body, nil)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete alias %q of model %q: %w", alias, model, err)
	}
	return nil
}

// SetTags implements Registry, one tag per call (MLflow has no batch call for
// version tags), in key order. Values longer than MaxTagValue are cut.
func (m *MLflow) SetTags(ctx context.Context, model, version string, tags map[string]string) error {
	if err := validateVersion(model, version); err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	if err := validateTags(model, version, tags); err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		body := map[string]string{"name": model, "version": version, "key": k, "value": bound(tags[k], MaxTagValue)}
		if err := m.call(ctx, http.MethodPost, "model-versions/set-tag", nil, body, nil); err != nil {
			return fmt.Errorf("set tag %s on version %q of model %q: %w", k, version, model, err)
		}
	}
	return nil
}

// mlflowEvent is an Event as one tag stores it.
type mlflowEvent struct {
	Key       string            `json:"key,omitempty"`
	ReleaseID string            `json:"releaseId,omitempty"`
	Actor     string            `json:"actor,omitempty"`
	Message   string            `json:"message,omitempty"`
	Evidence  map[string]string `json:"evidence,omitempty"`
	At        time.Time         `json:"at"`
}

// RecordEvent implements Registry by tagging the version (or, for an event without
// a version, the registered model): see MLflow. Recording the same event again
// rewrites the same tags, so it is idempotent.
func (m *MLflow) RecordEvent(ctx context.Context, e Event) error {
	if err := validateModel(e.Model); err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	if e.Kind == "" {
		return fmt.Errorf("record event for model %q: %w: empty kind", e.Model, ErrInvalid)
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	rec := mlflowEvent{Key: e.Key, ReleaseID: e.ReleaseID, Actor: e.Actor, Message: e.Message, Evidence: e.Evidence, At: e.At.UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record event %q for model %q: %w", e.Kind, e.Model, err)
	}
	if len(b) > MaxTagValue {
		// Too much evidence for one tag: keep the decision, summarise the evidence.
		rec.Evidence = map[string]string{"summary": EvidenceSummary(e.Evidence, MaxTagValue/2)}
		rec.Message = bound(rec.Message, MaxTagValue/4)
		if b, err = json.Marshal(rec); err != nil {
			return fmt.Errorf("record event %q for model %q: %w", e.Kind, e.Model, err)
		}
	}
	tags := map[string]string{TagEventPrefix + e.Kind: string(b)}
	// TagEvent and TagEvidence tell the latest decision; an analysis round is
	// evidence, kept (the latest) under its own tag only.
	if e.Kind != KindAnalysis {
		tags[TagEvent] = e.Kind
		if len(e.Evidence) > 0 {
			tags[TagEvidence] = EvidenceSummary(e.Evidence, maxEvidenceSummary)
		}
	}
	if e.Version != "" {
		if err := m.SetTags(ctx, e.Model, e.Version, tags); err != nil {
			return fmt.Errorf("record %s event: %w", e.Kind, err)
		}
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		body := map[string]string{"name": e.Model, "key": k, "value": bound(tags[k], MaxTagValue)}
		if err := m.call(ctx, http.MethodPost, "registered-models/set-tag", nil, body, nil); err != nil {
			return fmt.Errorf("record %s event on model %q: %w", e.Kind, e.Model, err)
		}
	}
	return nil
}

// Events implements Registry: the latest event of each kind on each version of the
// model (and on the model itself), oldest first. An unknown model has none.
func (m *MLflow) Events(ctx context.Context, model string) ([]Event, error) {
	if err := validateModel(model); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	versions, err := m.searchVersions(ctx, "name = "+quote(model))
	if err != nil {
		return nil, fmt.Errorf("events of model %q: %w", model, err)
	}
	var out []Event
	for _, v := range versions {
		for k, val := range v.Tags {
			kind, ok := strings.CutPrefix(k, TagEventPrefix)
			if !ok {
				continue
			}
			var rec mlflowEvent
			if err := json.Unmarshal([]byte(val), &rec); err != nil {
				continue // a tag someone else wrote; not ours to interpret
			}
			out = append(out, Event{Key: rec.Key, Model: model, Version: v.Version, ReleaseID: rec.ReleaseID, Kind: kind,
				Actor: rec.Actor, Message: rec.Message, Evidence: rec.Evidence, At: rec.At})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// Mark is what makes a version ask for a release: an alias pointing at it, or a tag
// with a given value. Exactly one of Alias and TagKey is set.
type Mark struct {
	Alias    string `json:"alias,omitempty"`
	TagKey   string `json:"tagKey,omitempty"`
	TagValue string `json:"tagValue,omitempty"`
}

func (k Mark) String() string {
	if k.Alias != "" {
		return "alias " + k.Alias
	}
	return "tag " + k.TagKey + "=" + k.TagValue
}

// Finder lists the versions that carry a mark, across all models. The release
// watcher polls it.
type Finder interface {
	MarkedVersions(ctx context.Context, mark Mark) ([]Version, error)
}

var _ Finder = (*MLflow)(nil)

// MarkedVersions implements Finder: registered models' aliases for an alias mark,
// MLflow's version search for a tag mark. Sorted by model, then version number.
func (m *MLflow) MarkedVersions(ctx context.Context, mark Mark) ([]Version, error) {
	var out []Version
	switch {
	case mark.Alias != "":
		models, err := m.searchModels(ctx)
		if err != nil {
			return nil, fmt.Errorf("versions with %s: %w", mark, err)
		}
		for _, rm := range models {
			for _, a := range rm.Aliases {
				if a.Alias != mark.Alias {
					continue
				}
				v, err := m.GetVersion(ctx, rm.Name, a.Version)
				if errors.Is(err, ErrNotFound) {
					continue // deleted since the search
				}
				if err != nil {
					return nil, fmt.Errorf("versions with %s: %w", mark, err)
				}
				out = append(out, v)
			}
		}
	case mark.TagKey != "":
		if strings.ContainsAny(mark.TagKey, "`") {
			return nil, fmt.Errorf("versions with %s: %w: a tag key with a backquote cannot be searched", mark, ErrInvalid)
		}
		vs, err := m.searchVersions(ctx, "tags.`"+mark.TagKey+"` = "+quote(mark.TagValue))
		if err != nil {
			return nil, fmt.Errorf("versions with %s: %w", mark, err)
		}
		out = vs
	default:
		return nil, fmt.Errorf("versions with a mark: %w: set an alias or a tag key", ErrInvalid)
	}
	sortVersions(out)
	return out, nil
}

func sortVersions(vs []Version) {
	sort.SliceStable(vs, func(i, j int) bool {
		if vs[i].Model != vs[j].Model {
			return vs[i].Model < vs[j].Model
		}
		a, aerr := strconv.Atoi(vs[i].Version)
		b, berr := strconv.Atoi(vs[j].Version)
		if aerr == nil && berr == nil {
			return a < b
		}
		return vs[i].Version < vs[j].Version
	})
}

type mlflowModel struct {
	Name    string `json:"name"`
	Aliases []struct {
		Alias   string `json:"alias"`
		Version string `json:"version"`
	} `json:"aliases"`
}

// searchModels lists every registered model, page by page.
func (m *MLflow) searchModels(ctx context.Context) ([]mlflowModel, error) {
	var out []mlflowModel
	token := ""
	for {
		q := url.Values{"max_results": {"100"}}
		if token != "" {
			q.Set("page_token", token)
		}
		var resp struct {
			Models []mlflowModel `json:"registered_models"`
			Next   string        `json:"next_page_token"`
		}
		if err := m.call(ctx, http.MethodGet, "registered-models/search", q, nil, &resp); err != nil {
			return nil, err
		}
		out = append(out, resp.Models...)
		if resp.Next == "" {
			return out, nil
		}
		token = resp.Next
	}
}

// searchVersions lists the versions matching an MLflow filter, page by page.
func (m *MLflow) searchVersions(ctx context.Context, filter string) ([]Version, error) {
	var out []Version
	token := ""
	for {
		q := url.Values{"filter": {filter}, "max_results": {"200"}}
		if token != "" {
			q.Set("page_token", token)
		}
		var resp struct {
			Versions []mlflowVersion `json:"model_versions"`
			Next     string          `json:"next_page_token"`
		}
		if err := m.call(ctx, http.MethodGet, "model-versions/search", q, nil, &resp); err != nil {
			return nil, err
		}
		for _, v := range resp.Versions {
			out = append(out, v.toVersion())
		}
		if resp.Next == "" {
			return out, nil
		}
		token = resp.Next
	}
}

// mlflowError is MLflow's error body.
type mlflowError struct {
	Code    string `json:"error_code"`
	Message string `json:"message"`
}

// call sends one REST API 2.0 request and decodes the answer into out. It maps
// MLflow's errors onto ErrNotFound, ErrInvalid and ErrUnavailable; messages never
// carry credentials.
func (m *MLflow) call(ctx context.Context, method, endpoint string, query url.Values, body, out any) error {
	u := *m.base
	u.Path += "/api/2.0/mlflow/" + endpoint
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case m.o.Token != "":
		req.Header.Set("Authorization", "Bearer "+m.o.Token)
	case m.o.Username != "" || m.o.Password != "":
		req.SetBasicAuth(m.o.Username, m.o.Password)
	}
	resp, err := m.o.HTTP.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// *url.Error repeats the URL; say which server instead, without the query.
		return fmt.Errorf("%w: %s %s: %v", ErrUnavailable, method, endpoint, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%w: %s %s: read the answer: %v", ErrUnavailable, method, endpoint, err)
	}
	if resp.StatusCode/100 == 2 {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode the answer: %w", method, endpoint, err)
		}
		return nil
	}
	var e mlflowError
	_ = json.Unmarshal(b, &e)
	msg := e.Message
	if msg == "" {
		msg = strings.TrimSpace(bound(string(b), 300))
	}
	detail := fmt.Sprintf("MLflow answered %d %s: %s", resp.StatusCode, e.Code, msg)
	switch {
	case e.Code == "RESOURCE_DOES_NOT_EXIST" || resp.StatusCode == http.StatusNotFound && e.Code == "":
		return fmt.Errorf("%w (%s)", ErrNotFound, detail)
	case e.Code == "INVALID_PARAMETER_VALUE" && strings.Contains(msg, "alias") && strings.Contains(msg, "not found"):
		// MLflow reports an unknown alias as a bad parameter.
		return fmt.Errorf("%w (%s)", ErrNotFound, detail)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %s: check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD", ErrInvalid, detail)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%w: %s", ErrUnavailable, detail)
	}
	return fmt.Errorf("%w: %s", ErrInvalid, detail)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// quote makes a string literal for an MLflow search filter.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}

// bound cuts s to at most n bytes on a rune boundary, marking the cut.
func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// EvidenceSummary renders evidence as "name: value; ..." in key order, bounded to
// n bytes: what fits in a registry tag.
func EvidenceSummary(evidence map[string]string, n int) string {
	keys := make([]string, 0, len(evidence))
	for k := range evidence {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + evidence[k]
	}
	return bound(strings.Join(parts, "; "), n)
}
