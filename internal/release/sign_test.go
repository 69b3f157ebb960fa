package release

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/signing"
	"github.com/mlrelease/mlrelease/workflows"
)

// testSigner is a fresh ed25519 key signing as principal.
func testSigner(t *testing.T, principal string) *Signer {
	t.Helper()
	s, err := newTestSigner(principal)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestSigner(principal string) (*Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	return &Signer{Key: k, Principal: principal}, nil
}

// allowedSignersFile writes an allowed-signers file naming signers and returns its path.
func allowedSignersFile(t *testing.T, signers ...*Signer) string {
	t.Helper()
	var lines []string
	for _, s := range signers {
		lines = append(lines, s.Principal+" "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.Key.PublicKey()))))
	}
	path := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// signed is req signed by s for the model's current release.
func signed(ctx context.Context, t *testing.T, s *Signer, model, kind string, req workflows.DecisionRequest) workflows.DecisionRequest {
	t.Helper()
	run, err := ReleaseRun(ctx, tc, model)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SignDecision(&req, workflows.WorkflowID(model), run, kind); err != nil {
		t.Fatal(err)
	}
	return req
}

// A signed start is attributed to its key; a decision signed by it verifies with
// OpenSSH's rules (the statement is what the workflow checks).
func TestSignedStartIsAttributed(t *testing.T) {
	ctx := ctxFor(t)
	model := uniqueModel("wine-signed")
	reg := newRegistry(t, model)
	queue := startWorker(t, reg)
	carol := testSigner(t, "carol")
	p := fastPlan(t, model)
	p.Approval.AllowedSigners = allowedSignersFile(t, alice, carol)
	if _, err := Start(ctx, tc, reg, StartOptions{Plan: p, StartedBy: "typed-name", TaskQueue: queue, Signer: carol}); err != nil {
		t.Fatal(err)
	}
	st, err := waitForStatus(ctx, t, model)
	if err != nil {
		t.Fatal(err)
	}
	if st.StartedBy != "carol" || st.StarterKey != signing.Fingerprint(carol.Key.PublicKey()) || st.Signing != workflows.ModeSigned {
		t.Errorf("status: startedBy %q, starterKey %q, signing %q; want carol, %s, signed", st.StartedBy, st.StarterKey, st.Signing, carol.Fingerprint())
	}
	run, err := ReleaseRun(ctx, tc, model)
	if err != nil || run == "" || run != st.ReleaseRun {
		t.Errorf("ReleaseRun = %q, %v; the release says %q", run, err, st.ReleaseRun)
	}
	_, err = Decide(ctx, tc, model, workflows.Abort, signed(ctx, t, carol, model, workflows.Abort, workflows.DecisionRequest{Comment: "test over"}), false)
	if err != nil {
		t.Fatal(err)
	}
}

func waitForStatus(ctx context.Context, t *testing.T, model string) (workflows.Status, error) {
	t.Helper()
	for {
		st, err := GetStatus(ctx, tc, model)
		if err == nil && st.Stage != "" {
			return st, nil
		}
		if ctx.Err() != nil {
			return st, err
		}
	}
}
