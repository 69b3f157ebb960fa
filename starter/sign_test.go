package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/signing"
	"github.com/mlrelease/mlrelease/workflows"
)

// mlrelease sign prints an update input whose signature covers the statement the
// release will check, for the named release run, as the --as principal.
func TestSignPrintsASignedInput(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "bob")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "bob")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	a, stdout, stderr, _ := testApp(t)
	code := a.run(context.Background(), []string{"sign", "reject", "wine", "--as", "bob", "--key", key, "--comment", "drift", "--release", "run-1", "--ttl", "5m"})
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var req workflows.DecisionRequest
	if err := json.Unmarshal(stdout.Bytes(), &req); err != nil {
		t.Fatalf("stdout is not a decision: %v\n%s", err, stdout)
	}
	if req.Who != "bob" || req.Comment != "drift" || req.Release != "run-1" || req.ExpiresAt.Sub(req.IssuedAt).Minutes() != 5 {
		t.Errorf("input %+v", req)
	}
	pub, err := signing.Verify(req.Signature, signing.Namespace, req.Statement(workflows.WorkflowID("wine"), workflows.Reject).Message())
	if err != nil {
		t.Fatalf("the signature does not verify: %v", err)
	}
	if _, err := signing.Verify(req.Signature, signing.Namespace, req.Statement(workflows.WorkflowID("wine"), workflows.Approve).Message()); err == nil {
		t.Error("a rejection's signature passes for an approval")
	}
	if !strings.Contains(stderr.String(), "temporal workflow update execute --workflow-id release/wine --name reject") ||
		!strings.Contains(stderr.String(), signing.Fingerprint(pub)) {
		t.Errorf("stderr lacks the command or the key: %s", stderr)
	}
}
