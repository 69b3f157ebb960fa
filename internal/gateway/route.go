package gateway

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// Pick is the routing decision: given a model's traffic and u drawn uniformly from
// [0, 1), it names the variant that answers the request and its backend. Weight 0
// never picks the candidate and weight 100 always does.
func Pick(t deploy.Traffic, u float64) (variant string, b deploy.Backend) {
	if t.Candidate != nil && u < float64(t.CandidateWeight)/100 {
		return deploy.Candidate, *t.Candidate
	}
	return deploy.Champion, t.Champion
}

// Mirrored reports whether a champion-served request is copied to the candidate,
// given u drawn uniformly from [0, 1) independently of Pick's draw.
func Mirrored(t deploy.Traffic, u float64) bool {
	return t.Candidate != nil && u < float64(t.ShadowShare)/100
}

// table maps a model to its route. A published table is never modified.
type table map[string]*route

// route is one model's applied traffic with its upstream URLs parsed once.
type route struct {
	applied deploy.Applied
	targets map[string]*url.URL // by variant
}

// newRoute validates t and copies it, so a caller changing t later cannot change a
// published route.
func newRoute(t deploy.Traffic) (*route, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	rt := &route{targets: map[string]*url.URL{}}
	champion, err := parseUpstream("champion", t.Champion.URL)
	if err != nil {
		return nil, err
	}
	rt.targets[deploy.Champion] = champion
	if t.Candidate != nil {
		candidate, err := parseUpstream("candidate", t.Candidate.URL)
		if err != nil {
			return nil, err
		}
		rt.targets[deploy.Candidate] = candidate
		c := *t.Candidate
		t.Candidate = &c
	}
	rt.applied.Traffic = t
	return rt, nil
}

// parseUpstream accepts absolute http(s) URLs without credentials: traffic is recorded
// in workflow histories and logs, where a password in a URL would leak.
func parseUpstream(variant, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %s url %q does not parse", deploy.ErrInvalid, variant, raw)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return nil, fmt.Errorf("%w: %s url %q is not an absolute http(s) URL", deploy.ErrInvalid, variant, raw)
	case u.User != nil:
		return nil, fmt.Errorf("%w: %s url must not carry credentials", deploy.ErrInvalid, variant)
	}
	return u, nil
}

// sameTraffic compares by value; Traffic holds a pointer, so == would not.
func sameTraffic(a, b deploy.Traffic) bool {
	if (a.Candidate == nil) != (b.Candidate == nil) {
		return false
	}
	if a.Candidate != nil && *a.Candidate != *b.Candidate {
		return false
	}
	return a.Model == b.Model && a.Champion == b.Champion &&
		a.CandidateWeight == b.CandidateWeight && a.ShadowShare == b.ShadowShare
}

// upstreamURL is where a request for {rest} goes on target; the primary and the
// shadow copy use it alike so both variants see the same path and query.
func upstreamURL(target *url.URL, rest, rawQuery string) *url.URL {
	u := *target
	u.Path = strings.TrimSuffix(target.Path, "/") + "/" + rest
	u.RawPath = ""
	switch {
	case target.RawQuery == "":
		u.RawQuery = rawQuery
	case rawQuery != "":
		u.RawQuery = target.RawQuery + "&" + rawQuery
	}
	return &u
}
