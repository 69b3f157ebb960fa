package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
)

// call is one Web API call the fake Slack received.
type call struct {
	Method string
	Form   url.Values
	Auth   string
}

// fakeSlack is slacktest's server with the endpoints it lacks (chat.update,
// usergroups.list) and recording versions of the ones we use: posts get distinct
// timestamps, users.info knows our users.
type fakeSlack struct {
	*slacktest.Server
	mu     sync.Mutex
	calls  []call
	posted chan call
	ts     atomic.Int64
	users  map[string]slack.User
	groups []slack.UserGroup
	// down makes every Web API call fail, as when Slack is unreachable.
	down atomic.Bool
}

func newFakeSlack(t *testing.T) *fakeSlack {
	t.Helper()
	f := &fakeSlack{posted: make(chan call, 1000), users: map[string]slack.User{}}
	record := func(method string, answer func(w http.ResponseWriter, form url.Values)) slacktest.Binder {
		return func(c slacktest.Customize) {
			c.Handle("/"+method, func(w http.ResponseWriter, r *http.Request) {
				if f.down.Load() {
					http.Error(w, "down", http.StatusServiceUnavailable)
					return
				}
				body, _ := io.ReadAll(r.Body)
				form, _ := url.ParseQuery(string(body))
				for k, v := range r.URL.Query() {
					form[k] = v
				}
				c := call{Method: method, Form: form, Auth: r.Header.Get("Authorization")}
				f.mu.Lock()
				f.calls = append(f.calls, c)
				f.mu.Unlock()
				f.posted <- c
				w.Header().Set("Content-Type", "application/json")
				answer(w, form)
			})
		}
	}
	ok := func(w http.ResponseWriter, v map[string]any) {
		v["ok"] = true
		_ = json.NewEncoder(w).Encode(v)
	}
	f.Server = slacktest.NewTestServer(
		record("chat.postMessage", func(w http.ResponseWriter, form url.Values) {
			ok(w, map[string]any{"channel": form.Get("channel"), "ts": fmt.Sprintf("1700000000.%06d", f.ts.Add(1))})
		}),
		record("chat.update", func(w http.ResponseWriter, form url.Values) {
			ok(w, map[string]any{"channel": form.Get("channel"), "ts": form.Get("ts"), "text": form.Get("text")})
		}),
		record("chat.postEphemeral", func(w http.ResponseWriter, form url.Values) {
			ok(w, map[string]any{"message_ts": fmt.Sprintf("1700000000.%06d", f.ts.Add(1))})
		}),
		record("users.info", func(w http.ResponseWriter, form url.Values) {
			f.mu.Lock()
			u, found := f.users[form.Get("user")]
			f.mu.Unlock()
			if !found {
				_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "user_not_found"})
				return
			}
			ok(w, map[string]any{"user": u})
		}),
		record("usergroups.list", func(w http.ResponseWriter, form url.Values) {
			f.mu.Lock()
			defer f.mu.Unlock()
			ok(w, map[string]any{"usergroups": f.groups})
		}),
	)
	f.Start()
	t.Cleanup(f.Stop)
	// slacktest hands every frame a client sends (Socket Mode acks) to this feed.
	go func() {
		for range f.SeenFeed {
		}
	}()
	return f
}

func (f *fakeSlack) addUser(id, name, display string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := slack.User{ID: id, Name: strings.ToLower(strings.Fields(name)[0]), RealName: name}
	u.Profile.DisplayName = display
	f.users[id] = u
}

func (f *fakeSlack) setGroups(gs ...slack.UserGroup) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups = gs
}

func (f *fakeSlack) recorded() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// await waits for a call that satisfies match, among those recorded so far and to
// come.
func (f *fakeSlack) await(t *testing.T, what string, match func(c call) bool) call {
	t.Helper()
	for _, c := range f.recorded() {
		if match(c) {
			return c
		}
	}
	deadline := time.After(time.Minute)
	for {
		select {
		case c := <-f.posted:
			if match(c) {
				return c
			}
		case <-deadline:
			t.Fatalf("no Slack call: %s; calls: %v", what, methods(f.recorded()))
		}
	}
}

func methods(cs []call) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Method + ":" + c.Form.Get("text")
	}
	return out
}

// tc is the client of the dev server TestMain starts for the package.
var tc client.Client

func TestMain(m *testing.M) { os.Exit(runWithDevServer(m)) }

func runWithDevServer(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := devserver.Start(ctx, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer func() { _ = srv.Stop() }()
	tc = srv.Client()
	return m.Run()
}

// fakeDeployer and fakeMetrics stand in for the gateway and Prometheus: every query
// returns a healthy error rate.
type fakeDeployer struct{ revision atomic.Int64 }

func (d *fakeDeployer) Apply(_ context.Context, t deploy.Traffic) (deploy.Applied, error) {
	return deploy.Applied{Traffic: t, Revision: d.revision.Add(1)}, nil
}

func (d *fakeDeployer) Current(context.Context, string) (deploy.Applied, error) {
	return deploy.Applied{}, deploy.ErrNotFound
}

type fakeMetrics struct{}

func (fakeMetrics) Value(context.Context, string, time.Time) (*float64, error) {
	v := 0.01
	return &v, nil
}
