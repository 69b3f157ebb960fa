package gateway

import (
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"

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

// StickyDraw turns a routing key (a user ID, say) into a fixed draw in [0, 1) for the
// model's current candidate, to pass to Pick instead of a random one. A key on the
// candidate at weight w stays there at every weight above w, since [0, w/100) only
// grows; a new candidate version reshuffles which users see it first.
func StickyDraw(model, candidateVersion, key string) float64 {
	return drawFrom(stickySeed(model, candidateVersion), key)
}

// FNV-1a, written out so that hashing a key allocates nothing.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func stickySeed(model, candidateVersion string) uint64 {
	h := uint64(fnvOffset)
	for _, s := range []string{model, candidateVersion} {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * fnvPrime
		}
		h = (h ^ 0) * fnvPrime // a separator, so ("ab","c") and ("a","bc") differ
	}
	return h
}

func drawFrom(seed uint64, key string) float64 {
	h := seed
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * fnvPrime
	}
	// splitmix64's finalizer: FNV's low bits are weak, and the draw uses the high ones.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return float64(h>>11) / (1 << 53)
}

// table maps a model to its route. A published table is never modified.
type table map[string]*route

// route is one model's applied traffic with its upstream URLs parsed once and its
// metric series looked up once.
type route struct {
	applied deploy.Applied
	targets map[string]*url.URL        // by variant
	metrics map[string]*variantMetrics // by variant
	// lastURL is, by variant, the upstream URL of the latest request: most requests
	// to a model go to the same path, and the Transport only reads a request's URL.
	lastURL map[string]*atomic.Pointer[cachedURL]
	// stickySeed is StickyDraw's hash state after the model and candidate version.
	stickySeed uint64
}

// newRoute validates t and copies it, so a caller changing t later cannot change a
// published route.
func newRoute(t deploy.Traffic, m *metrics) (*route, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	rt := &route{targets: map[string]*url.URL{}, metrics: map[string]*variantMetrics{},
		lastURL: map[string]*atomic.Pointer[cachedURL]{deploy.Champion: {}, deploy.Candidate: {}}}
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
		rt.metrics[deploy.Candidate] = m.forVariant(t.Model, deploy.Candidate, c.Version)
		rt.stickySeed = stickySeed(t.Model, c.Version)
	}
	rt.metrics[deploy.Champion] = m.forVariant(t.Model, deploy.Champion, t.Champion.Version)
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

type cachedURL struct {
	rest, rawQuery string
	u              *url.URL
}

// upstream is upstreamURL for the variant's target; the URL is shared, never changed.
func (rt *route) upstream(variant, rest, rawQuery string) *url.URL {
	last := rt.lastURL[variant]
	if c := last.Load(); c != nil && c.rest == rest && c.rawQuery == rawQuery {
		return c.u
	}
	u := upstreamURL(rt.targets[variant], rest, rawQuery)
	last.Store(&cachedURL{rest: rest, rawQuery: rawQuery, u: u})
	return u
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
