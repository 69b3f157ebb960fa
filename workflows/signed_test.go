package workflows

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/signing"
)

// testKey is a person's SSH key for the signed-decision tests.
type testKey struct {
	principal string
	signer    ssh.Signer
}

func newTestKey(t testing.TB, principal string) testKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return testKey{principal: principal, signer: s}
}

func (k testKey) allowed() string {
	return k.principal + ` namespaces="mlrelease" ` + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.signer.PublicKey())))
}

// sign signs req as kind for release run at now, valid for 10 minutes.
func (k testKey) sign(t testing.TB, req DecisionRequest, kind, run string, now time.Time) DecisionRequest {
	req.Who = k.principal
	if req.Nonce == "" {
		n, err := signing.Nonce()
		require.NoError(t, err)
		req.Nonce = n
	}
	req.Release, req.IssuedAt, req.ExpiresAt = run, now.UTC().Truncate(time.Second), now.UTC().Truncate(time.Second).Add(10*time.Minute)
	sig, err := signing.SignStatement(k.signer, req.Statement(WorkflowID("iris"), kind))
	require.NoError(t, err)
	req.Signature = sig
	return req
}

// sendAt sends, at after, the update that build makes then (it may read the
// release's status and the workflow clock), and reports what came of it.
func (s *releaseSuite) sendAt(after time.Duration, id, kind string, build func() DecisionRequest) func() (Decision, error) {
	var d Decision
	var refusal error
	s.env.RegisterDelayedCallback(func() {
		s.env.UpdateWorkflow(kind, id, &testsuite.TestUpdateCallback{
			OnAccept: func() {},
			OnReject: func(err error) { refusal = err },
			OnComplete: func(v any, err error) {
				if dd, ok := v.(Decision); ok {
					d = dd
				}
				if err != nil {
					refusal = err
				}
			},
		}, build())
	}, after)
	return func() (Decision, error) { return d, refusal }
}

// TestSignedDecisions: a release with trusted keys refuses the forged update from
// issue 12, an unsigned decision, an unlisted key, a signature for another run, a
// tampered comment, an expired signature, a replayed signature and the starter's
// own key under four eyes; none changes anything; two distinct signers promote.
func (s *releaseSuite) TestSignedDecisions() {
	t := s.T()
	alice, bob, carol, mallory := newTestKey(t, "alice"), newTestKey(t, "bob"), newTestKey(t, "carol"), newTestKey(t, "mallory")
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval.Unsigned = false
		p.Approval.Approvers = []string{"alice", "bob", "carol"}
		p.Approval.Quorum = 2
		p.Approval.FourEyes = true
	})
	in := ReleaseInput{Plan: p, StartedBy: "alice"}
	in.AllowedSigners = strings.Join([]string{alice.allowed(), bob.allowed(), carol.allowed()}, "\n")
	start := DecisionRequest{Comment: StartComment(p, in.AllowedSigners), Source: "cli"}
	start = alice.sign(t, start, StartKind, "", s.env.Now())
	in.StartSigned = &start.Signed

	run := func() string { return s.status().ReleaseRun }
	now := func() time.Time { return s.env.Now() }
	at := duringApproval
	step := func() time.Duration { at += time.Minute; return at }
	good := func(k testKey, comment string) func() DecisionRequest {
		return func() DecisionRequest {
			return k.sign(t, DecisionRequest{Comment: comment, Source: "cli"}, Approve, run(), now())
		}
	}
	forged := s.sendAt(step(), "forged", Approve, func() DecisionRequest {
		return DecisionRequest{Who: "alice", Comment: "I am not alice"}
	})
	unlisted := s.sendAt(step(), "unlisted", Approve, func() DecisionRequest {
		posing := testKey{principal: "alice", signer: mallory.signer}
		return posing.sign(t, DecisionRequest{Comment: "ship it"}, Approve, run(), now())
	})
	unlistedAsSelf := s.sendAt(step(), "unlisted-self", Approve, good(mallory, "ship it"))
	otherRun := s.sendAt(step(), "other-run", Approve, func() DecisionRequest {
		return bob.sign(t, DecisionRequest{Comment: "ok"}, Approve, "another-run-id", now())
	})
	tampered := s.sendAt(step(), "tampered", Approve, func() DecisionRequest {
		req := good(bob, "looks fine")()
		req.Comment = "looks great"
		return req
	})
	expired := s.sendAt(step(), "expired", Approve, func() DecisionRequest {
		return bob.sign(t, DecisionRequest{Comment: "old"}, Approve, run(), now().Add(-30*time.Minute))
	})
	otherKind := s.sendAt(step(), "other-kind", Approve, func() DecisionRequest {
		return bob.sign(t, DecisionRequest{Comment: "pause it"}, Pause, run(), now())
	})
	groups := s.sendAt(step(), "groups", Approve, func() DecisionRequest {
		return bob.sign(t, DecisionRequest{Comment: "ok", Groups: []string{"S0REL"}}, Approve, run(), now())
	})
	starter := s.sendAt(step(), "starter", Approve, good(alice, "my own release"))
	var before Status
	s.env.RegisterDelayedCallback(func() { before = s.status() }, step())

	var bobsApproval DecisionRequest
	first := s.sendAt(step(), "bob-1", Approve, func() DecisionRequest {
		bobsApproval = good(bob, "metrics look right")()
		return bobsApproval
	})
	replayed := s.sendAt(step(), "bob-2", Approve, func() DecisionRequest { return bobsApproval })
	second := s.sendAt(step(), "carol-1", Approve, good(carol, "agreed"))

	s.env.ExecuteWorkflow(ReleaseWorkflow, in)
	s.Require().True(s.env.IsWorkflowCompleted())

	for _, tt := range []struct {
		name   string
		result func() (Decision, error)
		want   string
	}{
		{"forged", forged, "the decision is not signed"},
		{"unlisted key as alice", unlisted, "untrusted key: key " + signing.Fingerprint(mallory.signer.PublicKey()) + " is not in the release's allowed signers"},
		{"unlisted key", unlistedAsSelf, "is not in the release's allowed signers"},
		{"another run", otherRun, `the signature is for release "another-run-id"`},
		{"tampered comment", tampered, "bad signature: signature does not match the message"},
		{"expired", expired, "the signature expired at"},
		{"signed for another decision", otherKind, "bad signature"},
		{"groups from a person", groups, "only the Slack bridge vouches for user groups"},
		{"the starter's key", starter, "four eyes: key " + signing.Fingerprint(alice.signer.PublicKey()) + " started this release"},
		{"replayed", replayed, "replayed: this signed decision"},
	} {
		_, err := tt.result()
		s.Require().Error(err, tt.name)
		s.Contains(err.Error(), tt.want, tt.name)
	}
	s.Equal(StageAwaitingApproval, before.Stage, "nothing refused changed the release")
	s.Empty(before.Decisions, "no refused update is recorded as a decision")
	s.Equal(signing.Fingerprint(alice.signer.PublicKey()), before.StarterKey)
	s.Equal(ModeSigned, before.Signing)
	s.Len(before.TrustedKeys, 3)

	d, err := first()
	s.Require().NoError(err)
	s.Equal("bob", d.Who)
	s.Equal(signing.Fingerprint(bob.signer.PublicKey()), d.Key, "the decision carries the key's fingerprint")
	s.Equal(1, d.Remaining)
	d, err = second()
	s.Require().NoError(err)
	s.Equal("carol", d.Who)
	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Contains(res.Reason, "approved by bob, carol")
	s.Len(res.Status.Decisions, 2)
	tags := map[string]string{}
	for _, c := range s.changes {
		if _, ok := c.Tags[TagApprover]; ok {
			tags = c.Tags
		}
	}
	s.Equal(signing.Fingerprint(bob.signer.PublicKey())+", "+signing.Fingerprint(carol.signer.PublicKey()), tags[TagApproverKey],
		"the registry records the approvers' keys")
	s.Equal(ModeSigned, tags[TagSigning])
}

// TestSignedDecisionByPlanWithoutKeys: a release that trusts no key takes no
// decision, and says why.
func (s *releaseSuite) TestSignedDecisionsWithoutKeysRefuseAll() {
	p := s.testPlanWith(func(p *plan.Plan) { p.Approval.Unsigned = false })
	abort := s.sendAt(duringCanary, "abort", Abort, func() DecisionRequest {
		return DecisionRequest{Who: "carol", Comment: "stop"}
	})
	s.run(p)
	_, err := abort()
	s.Require().Error(err)
	s.Contains(err.Error(), "this release trusts no keys")
	s.Equal(OutcomeRolledBack, s.result().Outcome, "the approval times out: nobody could approve")
}

// TestSignedSignalRefusedIsRecorded: an unsigned decision sent as a signal is
// recorded as refused, not applied.
func (s *releaseSuite) TestSignedSignalRefusedIsRecorded() {
	t := s.T()
	alice := newTestKey(t, "alice")
	p := s.testPlanWith(func(p *plan.Plan) { p.Approval.Unsigned = false })
	in := ReleaseInput{Plan: p, StartedBy: "ci"}
	in.AllowedSigners = alice.allowed()
	s.env.RegisterDelayedCallback(func() {
		s.env.SignalWorkflow(Abort, DecisionRequest{Who: "alice", Comment: "forged"})
	}, duringCanary)
	approve := s.sendAt(duringApproval, "alice", Approve, func() DecisionRequest {
		return alice.sign(t, DecisionRequest{Comment: "ok"}, Approve, s.status().ReleaseRun, s.env.Now())
	})
	s.env.ExecuteWorkflow(ReleaseWorkflow, in)
	s.Require().True(s.env.IsWorkflowCompleted())
	_, err := approve()
	s.Require().NoError(err)
	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Require().Len(res.Status.Decisions, 2)
	s.True(res.Status.Decisions[0].Refused)
	s.Contains(res.Status.Decisions[0].Reason, "not signed")
	s.Equal(signing.Fingerprint(alice.signer.PublicKey()), res.Status.Decisions[1].Key)
}

func TestResolveTrust(t *testing.T) {
	alice, bob, bridge := newTestKey(t, "alice"), newTestKey(t, "bob"), newTestKey(t, "bridge")
	now := time.Date(2026, 11, 29, 16, 0, 0, 0, time.UTC)
	p := plan.Plan{Model: "iris", Candidate: "2"}
	signedStart := func(k testKey, allowed string) *Signed {
		req := DecisionRequest{Comment: StartComment(p, allowed), Source: "cli"}
		req = k.sign(t, req, StartKind, "", now)
		return &req.Signed
	}
	bridgeLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(bridge.signer.PublicKey())))

	// The worker's keys are the root: plan keys count when one of them signed the start.
	in := ReleaseInput{Plan: p, StartedBy: "alice", StartTrust: StartTrust{AllowedSigners: bob.allowed(), StartSigned: signedStart(alice, bob.allowed())}}
	st, status := resolveTrust("release/iris", in, WorkerTrust{AllowedSigners: alice.allowed(), SlackBridge: bridgeLine}, now, false)
	require.Equal(t, ModeSigned, st.Mode)
	require.True(t, st.StartVerified)
	require.Len(t, status.TrustedKeys, 3, "worker, plan and bridge keys")
	require.Contains(t, status.TrustedKeys[2], "slack:*")

	// A start the worker's keys did not sign: the plan's keys are ignored.
	in = ReleaseInput{Plan: p, StartedBy: "bob", StartTrust: StartTrust{AllowedSigners: bob.allowed(), StartSigned: signedStart(bob, bob.allowed())}}
	st, status = resolveTrust("release/iris", in, WorkerTrust{AllowedSigners: alice.allowed()}, now, false)
	require.False(t, st.StartVerified)
	require.Len(t, status.TrustedKeys, 1)
	require.Contains(t, status.TrustNote, "the plan's allowed signers were ignored")

	// A release the watcher started has no human starter to exclude.
	st, status = resolveTrust("release/iris", ReleaseInput{Plan: p, StartedBy: WatcherActor}, WorkerTrust{AllowedSigners: alice.allowed()}, now, true)
	require.True(t, st.StartVerified)
	require.Empty(t, st.StarterKey)
	require.Contains(t, status.TrustNote, "started by the release watcher")

	// approval.unsigned is honoured only by a worker with no keys of its own.
	p.Approval.Unsigned = true
	st, status = resolveTrust("release/iris", ReleaseInput{Plan: p}, WorkerTrust{}, now, false)
	require.Equal(t, ModeUnsigned, st.Mode)
	require.Contains(t, status.Signing, "self-asserted")
	st, status = resolveTrust("release/iris", ReleaseInput{Plan: p}, WorkerTrust{AllowedSigners: alice.allowed()}, now, false)
	require.Equal(t, ModeSigned, st.Mode)
	require.Contains(t, status.TrustNote, "approval.unsigned was not honoured")

	// A start signed for another model does not verify.
	p.Approval.Unsigned = false
	in = ReleaseInput{Plan: plan.Plan{Model: "wine", Candidate: "2"}, StartedBy: "alice", StartTrust: StartTrust{StartSigned: signedStart(alice, "")}}
	st, _ = resolveTrust("release/wine", in, WorkerTrust{AllowedSigners: alice.allowed()}, now, false)
	require.False(t, st.StartVerified)

	// alice's start signature reused with other plan keys, or a weaker approval, does
	// not verify: the plan's keys are then ignored.
	aliceStart := signedStart(alice, bob.allowed())
	mallory := newTestKey(t, "mallory")
	in = ReleaseInput{Plan: p, StartedBy: "alice", StartTrust: StartTrust{AllowedSigners: mallory.allowed(), StartSigned: aliceStart}}
	st, status = resolveTrust("release/iris", in, WorkerTrust{AllowedSigners: alice.allowed()}, now, false)
	require.False(t, st.StartVerified)
	require.Contains(t, status.TrustNote, "the plan's allowed signers were ignored")
	weaker := p
	weaker.Approval.FourEyes = !p.Approval.FourEyes
	in = ReleaseInput{Plan: weaker, StartedBy: "alice", StartTrust: StartTrust{AllowedSigners: bob.allowed(), StartSigned: aliceStart}}
	st, _ = resolveTrust("release/iris", in, WorkerTrust{AllowedSigners: alice.allowed()}, now, false)
	require.False(t, st.StartVerified)
}

// TestOpenSSHSignedApproval: a decision signed with Debian's ssh-keygen -Y sign over
// the statement is taken by the release, as the CLI's own would be.
func (s *releaseSuite) TestOpenSSHSignedApproval() {
	t := s.T()
	dir := t.TempDir()
	key := filepath.Join(dir, "carol")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "carol", "-f", key).CombinedOutput()
	s.Require().NoError(err, "ssh-keygen: %s", out)
	pub, err := os.ReadFile(key + ".pub")
	s.Require().NoError(err)

	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval.Unsigned = false
		p.Approval.Approvers = []string{"carol"}
	})
	in := ReleaseInput{Plan: p, StartedBy: "ci"}
	in.AllowedSigners = `carol namespaces="mlrelease" ` + string(pub)
	approve := s.sendAt(duringApproval, "carol", Approve, func() DecisionRequest {
		now := s.env.Now().UTC().Truncate(time.Second)
		req := DecisionRequest{Who: "carol", Comment: "signed with ssh-keygen", Source: "ssh-keygen",
			Signed: Signed{Release: s.status().ReleaseRun, IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute), Nonce: "openssh-1"}}
		msg := filepath.Join(dir, "statement")
		s.Require().NoError(os.WriteFile(msg, req.Statement(WorkflowID(p.Model), Approve).Message(), 0o600))
		out, err := exec.Command("ssh-keygen", "-Y", "sign", "-f", key, "-n", "mlrelease", msg).CombinedOutput()
		s.Require().NoError(err, "ssh-keygen -Y sign: %s", out)
		sig, err := os.ReadFile(msg + ".sig")
		s.Require().NoError(err)
		req.Signature = string(sig)
		return req
	})
	s.env.ExecuteWorkflow(ReleaseWorkflow, in)
	s.Require().True(s.env.IsWorkflowCompleted())
	d, err := approve()
	s.Require().NoError(err)
	s.Equal("carol", d.Who)
	s.NotEmpty(d.Key)
	s.Equal(OutcomePromoted, s.result().Outcome)
}
