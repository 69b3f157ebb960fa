// Package deploy says how a model's live traffic is split between its champion and a
// candidate. A Deployer makes a data plane (our gateway by default; KServe, Seldon or
// SageMaker behind the same interface) match a desired Traffic, idempotently.
package deploy

import (
	"context"
	"errors"
	"fmt"
)

// Variant names, as they appear in routes, metrics labels and release plans.
const (
	Champion  = "champion"
	Candidate = "candidate"
)

// ErrNotFound means the data plane has no routes for the model.
var ErrNotFound = errors.New("not found")

// ErrInvalid means the data plane refused the desired traffic as malformed; retrying
// the same request cannot help.
var ErrInvalid = errors.New("invalid traffic")

// Backend is one model version's serving endpoint.
type Backend struct {
	Version string `json:"version"`
	URL     string `json:"url"`
}

// Traffic is the desired routing of one model.
type Traffic struct {
	// Target is the data plane that routes it; nil means the worker's gateway.
	Target   *Target `json:"target,omitempty"`
	Model    string  `json:"model"`
	Champion Backend `json:"champion"`
	// Candidate is nil when only the champion serves.
	Candidate *Backend `json:"candidate,omitempty"`
	// CandidateWeight is the percentage (0..100) of live requests answered by the candidate.
	CandidateWeight int `json:"candidateWeight"`
	// ShadowShare is the percentage (0..100) of champion-served requests copied to the
	// candidate; the client always gets the champion's answer for those.
	ShadowShare int `json:"shadowShare"`
}

// Validate reports the first field that a data plane must refuse, naming it and its value.
func (t Traffic) Validate() error {
	switch {
	case t.Model == "":
		return fmt.Errorf("%w: model is empty", ErrInvalid)
	case t.Champion.Version == "" || t.Champion.URL == "":
		return fmt.Errorf("%w: champion needs a version and a url, got version %q url %q", ErrInvalid, t.Champion.Version, t.Champion.URL)
	case t.CandidateWeight < 0 || t.CandidateWeight > 100:
		return fmt.Errorf("%w: candidateWeight %d is outside 0..100", ErrInvalid, t.CandidateWeight)
	case t.ShadowShare < 0 || t.ShadowShare > 100:
		return fmt.Errorf("%w: shadowShare %d is outside 0..100", ErrInvalid, t.ShadowShare)
	case t.Candidate == nil && (t.CandidateWeight != 0 || t.ShadowShare != 0):
		return fmt.Errorf("%w: candidateWeight %d and shadowShare %d need a candidate", ErrInvalid, t.CandidateWeight, t.ShadowShare)
	case t.Candidate != nil && (t.Candidate.Version == "" || t.Candidate.URL == ""):
		return fmt.Errorf("%w: candidate needs a version and a url, got version %q url %q", ErrInvalid, t.Candidate.Version, t.Candidate.URL)
	}
	return nil
}

// Applied is the traffic a data plane holds, with a revision that rises on every change.
type Applied struct {
	Traffic
	Revision int64 `json:"revision"`
}

// Deployer makes a data plane route a model's traffic as desired.
type Deployer interface {
	// Apply ensures the model's routes equal t. Applying the same traffic twice changes
	// nothing and returns the same revision.
	Apply(ctx context.Context, t Traffic) (Applied, error)
	// Current returns the model's routes, or ErrNotFound.
	Current(ctx context.Context, model string) (Applied, error)
}
