package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// FeedbackOptions bound the predictions kept for joining with ground truth.
type FeedbackOptions struct {
	// TTL is how long a prediction waits for its label. Default 1h.
	TTL time.Duration
	// Capacity is the most predictions kept; the oldest make room. Default 100,000
	// (about 6 MB).
	Capacity int
	// Token, when set, is the bearer token POST /feedback requires: without it
	// anyone who reaches the gateway could label a prediction first (request IDs are
	// random, but a client's own X-Request-Id is what the client chose).
	Token string
}

func (o *FeedbackOptions) setDefaults() {
	if o.TTL <= 0 {
		o.TTL = time.Hour
	}
	if o.Capacity <= 0 {
		o.Capacity = 100_000
	}
}

// pending is a served prediction waiting for its label. It holds no pointers, nor do
// the store's map and ring, so the garbage collector never scans them: at 100,000
// waiting predictions a map of strings cost the gateway a tenth of its CPU in GC.
type pending struct {
	seq     uint64
	at      int64  // unix nanoseconds
	class   uint64 // hash of the canonical class
	variant uint32 // index into feedbackStore.variants
}

// slot is a place in the arrival order; seq tells a live entry from one already joined
// or replaced by a later request with the same ID.
type slot struct {
	key, seq uint64
}

// feedbackStore keeps served predictions by (a 64-bit hash of) request ID in arrival
// order, which with one TTL is also expiry order: a ring of slots bounds the memory,
// and its head is always the next to expire. Two IDs colliding in 64 bits among
// 100,000 waiting is a one in 10^9 event, and costs one wrong join.
type feedbackStore struct {
	ttl time.Duration
	now func() time.Time

	mu       sync.Mutex
	entries  map[uint64]pending
	ring     []slot
	head, n  int
	seq      uint64
	variants []*variantMetrics    // bounded by the series that exist anyway
	index    map[[3]string]uint32 // model, variant, version -> variants index

	// wantAuth is the SHA-256 of the Authorization header POST /feedback requires;
	// nil when no token is set.
	wantAuth *[sha256.Size]byte
}

func newFeedbackStore(opts FeedbackOptions, now func() time.Time) *feedbackStore {
	s := &feedbackStore{ttl: opts.TTL, now: now, entries: map[uint64]pending{}, ring: make([]slot, opts.Capacity),
		index: map[[3]string]uint32{}}
	if opts.Token != "" {
		sum := sha256.Sum256([]byte("Bearer " + opts.Token))
		s.wantAuth = &sum
	}
	return s
}

// authorized reports whether r carries the feedback token, when one is set. The
// token is compared as a hash in constant time and never logged or echoed.
func (s *feedbackStore) authorized(r *http.Request) bool {
	if s.wantAuth == nil {
		return true
	}
	got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
	return subtle.ConstantTimeCompare(got[:], s.wantAuth[:]) == 1
}

// hashString is FNV-1a with splitmix64's finalizer (see drawFrom).
func hashString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// put keeps the prediction served for id.
func (s *feedbackStore) put(id, class string, vm *variantMetrics) {
	now := s.now().UnixNano()
	key, classHash := hashString(id), hashString(class)
	s.mu.Lock()
	defer s.mu.Unlock()
	vi, ok := s.index[[3]string{vm.model, vm.variant, vm.version}]
	if !ok {
		vi = uint32(len(s.variants))
		s.variants = append(s.variants, vm)
		s.index[[3]string{vm.model, vm.variant, vm.version}] = vi
	}
	s.expireLocked(now)
	if s.n == len(s.ring) {
		s.popLocked(expiredCapacity)
	}
	s.seq++
	s.entries[key] = pending{seq: s.seq, at: now, class: classHash, variant: vi}
	s.ring[(s.head+s.n)%len(s.ring)] = slot{key, s.seq}
	s.n++
}

func (s *feedbackStore) expireLocked(now int64) {
	for s.n > 0 {
		e, live := s.entries[s.ring[s.head].key]
		if live && e.seq == s.ring[s.head].seq && now-e.at < int64(s.ttl) {
			return
		}
		s.popLocked(expiredAge)
	}
}

// popLocked drops the oldest slot, counting its prediction when it was still waiting.
func (s *feedbackStore) popLocked(reason string) {
	sl := s.ring[s.head]
	s.ring[s.head] = slot{}
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	if e, ok := s.entries[sl.key]; ok && e.seq == sl.seq {
		delete(s.entries, sl.key)
		vm := s.variants[e.variant]
		if reason == expiredAge {
			vm.expiredAge.Inc()
		} else {
			vm.expiredRoom.Inc()
		}
	}
}

var (
	errUnknownRequest = errors.New("no prediction is waiting for this request_id (unknown, or already labelled)")
	errExpired        = errors.New("the prediction for this request_id expired before its label arrived")
)

// join takes the prediction served for id and says whether label was correct; a
// prediction is joined at most once.
func (s *feedbackStore) join(id, label string) (*variantMetrics, string, error) {
	now := s.now().UnixNano()
	key := hashString(id)
	s.mu.Lock()
	e, ok := s.entries[key]
	var vm *variantMetrics
	if ok {
		delete(s.entries, key) // its ring slot is skipped when it comes up
		vm = s.variants[e.variant]
	}
	s.mu.Unlock()
	if !ok {
		return nil, "", errUnknownRequest
	}
	if now-e.at >= int64(s.ttl) {
		vm.expiredAge.Inc()
		return vm, "", errExpired
	}
	if hashString(scoring.CanonicalLabel(label)) == e.class {
		vm.correct.Inc()
		return vm, outcomeCorrect, nil
	}
	vm.incorrect.Inc()
	return vm, outcomeIncorrect, nil
}

func (s *feedbackStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Feedback is the body of POST /feedback: the true label of a served request.
type Feedback struct {
	RequestID string `json:"request_id"`
	// Label is a JSON string or number; numbers compare in canonical form (1.0 is "1").
	Label scoring.Prediction `json:"label"`
}

// FeedbackResult is the answer to an accepted POST /feedback.
type FeedbackResult struct {
	RequestID string `json:"request_id"`
	Model     string `json:"model"`
	Variant   string `json:"variant"`
	Version   string `json:"version"`
	Outcome   string `json:"outcome"`
}

const maxFeedbackBody = 4 << 10

func (g *Gateway) postFeedback(w http.ResponseWriter, r *http.Request) {
	if !g.feedback.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mlrelease-feedback"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong feedback bearer token")
		return
	}
	var f Feedback
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFeedbackBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body is not feedback {request_id, label}: %v", err))
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body has data after the feedback object")
		return
	}
	switch {
	case strings.TrimSpace(f.RequestID) == "":
		writeError(w, http.StatusBadRequest, "request_id is empty")
		return
	case strings.TrimSpace(string(f.Label)) == "":
		writeError(w, http.StatusBadRequest, "label is missing or empty")
		return
	}
	vm, outcome, err := g.feedback.join(f.RequestID, string(f.Label))
	switch {
	case errors.Is(err, errExpired):
		g.metrics.feedbackMisses.WithLabelValues(missExpired).Inc()
		writeError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		if g.forwardFeedback(w, r, f) {
			return // another replica served the prediction, and joined it
		}
		g.metrics.feedbackMisses.WithLabelValues(missUnknown).Inc()
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, FeedbackResult{RequestID: f.RequestID, Model: vm.model, Variant: vm.variant,
		Version: vm.version, Outcome: outcome})
}
