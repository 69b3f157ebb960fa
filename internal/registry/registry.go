// Package registry is the source of truth for model versions, their aliases
// (champion, challenger) and tags, and the audit log of every release decision.
// It is shaped after MLflow's model registry so that a local SQLite file and an
// MLflow server can stand behind the same small Registry interface.
package registry

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// ErrNotFound means the model, version or alias does not exist. Errors wrap it
// with the names involved; test with errors.Is.
var ErrNotFound = errors.New("not found")

// ErrInvalid means the request itself is malformed (an empty name, a reserved
// alias); retrying it cannot help.
var ErrInvalid = errors.New("invalid")

// Well-known aliases. The champion serves production traffic; the challenger is the
// version being released against it.
const (
	AliasChampion   = "champion"
	AliasChallenger = "challenger"
)

// Version is one registered version of a model. It travels through Temporal
// history, so it is plain JSON and must never carry a secret.
type Version struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Endpoint is where the version is served (the deployer's backend URL).
	Endpoint string `json:"endpoint,omitempty"`
	// Metadata is set at registration (framework, training run, ...).
	Metadata map[string]string `json:"metadata,omitempty"`
	// Tags are mutable annotations, e.g. the outcome of a release.
	Tags map[string]string `json:"tags,omitempty"`
	// Aliases point at this version, sorted by name.
	Aliases   []string  `json:"aliases,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// KindAnalysis is the kind of an audit event that holds one analysis round in full:
// evidence, not a decision.
const KindAnalysis = "analysis"

// Event is one entry of a model's audit log: a decision and its evidence.
type Event struct {
	// Key makes recording idempotent: an event whose key is already recorded is
	// ignored, so a retried activity records once. Derive it from the workflow
	// (e.g. release ID + decision). Empty means "generate one".
	Key       string            `json:"key,omitempty"`
	Model     string            `json:"model"`
	Version   string            `json:"version,omitempty"`
	ReleaseID string            `json:"releaseId,omitempty"`
	Kind      string            `json:"kind"`
	Actor     string            `json:"actor,omitempty"`
	Message   string            `json:"message,omitempty"`
	Evidence  map[string]string `json:"evidence,omitempty"`
	// At is when the decision was made; zero means "when recorded".
	At time.Time `json:"at"`
}

// Registry is a model registry. Implementations live in their own files
// (sqlite.go, later mlflow.go); all methods are safe for concurrent use and every
// mutation is idempotent, because activities are retried.
type Registry interface {
	// GetVersion returns one version with its tags and aliases.
	GetVersion(ctx context.Context, model, version string) (Version, error)
	// ResolveAlias returns the version an alias points at.
	ResolveAlias(ctx context.Context, model, alias string) (Version, error)
	// SetAlias points alias at version, moving it if it pointed elsewhere.
	SetAlias(ctx context.Context, model, alias, version string) error
	// DeleteAlias removes alias; removing an absent alias is not an error.
	DeleteAlias(ctx context.Context, model, alias string) error
	// SetTags upserts tags on a version; tags not named are left alone.
	SetTags(ctx context.Context, model, version string, tags map[string]string) error
	// RecordEvent appends to the audit log, once per Key.
	RecordEvent(ctx context.Context, e Event) error
	// Events returns a model's audit log, oldest first.
	Events(ctx context.Context, model string) ([]Event, error)
	Close() error
}

// MLflow reserves "latest" and "v<number>" (they already mean "a version"), so a
// registry that may later move to MLflow refuses them from the start.
var reservedAlias = regexp.MustCompile(`^(?i:latest|v[0-9]+)$`)

func validateModel(model string) error {
	if model == "" {
		return fmt.Errorf("%w: empty model name", ErrInvalid)
	}
	return nil
}

func validateVersion(model, version string) error {
	if err := validateModel(model); err != nil {
		return err
	}
	if version == "" {
		return fmt.Errorf("%w: empty version of model %q", ErrInvalid, model)
	}
	return nil
}

func validateAlias(model, alias string) error {
	if err := validateModel(model); err != nil {
		return err
	}
	if alias == "" {
		return fmt.Errorf("%w: empty alias of model %q", ErrInvalid, model)
	}
	if reservedAlias.MatchString(alias) {
		return fmt.Errorf("%w: alias %q of model %q is reserved (\"latest\" and \"v<number>\" name versions); choose another name",
			ErrInvalid, alias, model)
	}
	return nil
}

func validateTags(model, version string, tags map[string]string) error {
	for k := range tags {
		if k == "" {
			return fmt.Errorf("%w: empty tag key on model %q version %q", ErrInvalid, model, version)
		}
	}
	return nil
}
