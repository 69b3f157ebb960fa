package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/signing"
	"github.com/mlrelease/mlrelease/workflows"
)

// DefaultSignatureLifetime is how long a signed decision stays valid by default.
const DefaultSignatureLifetime = 10 * time.Minute

// Signer signs decisions and starts as Principal, the name the release's allowed
// signers give Key.
type Signer struct {
	Key       ssh.Signer
	Principal string
	// Lifetime is how long a signature stays valid; zero means
	// DefaultSignatureLifetime.
	Lifetime time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Fingerprint is the signing key's SHA256 fingerprint.
func (s Signer) Fingerprint() string { return signing.Fingerprint(s.Key.PublicKey()) }

func (s Signer) stamp(release, nonce string, issued time.Time) (workflows.Signed, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	life := s.Lifetime
	if life == 0 {
		life = DefaultSignatureLifetime
	}
	if life < 0 || life > workflows.MaxSignatureLifetime {
		return workflows.Signed{}, fmt.Errorf("signature lifetime %s: want more than 0 and at most %s", life, workflows.MaxSignatureLifetime)
	}
	if nonce == "" {
		var err error
		if nonce, err = signing.Nonce(); err != nil {
			return workflows.Signed{}, err
		}
	}
	at := issued
	if at.IsZero() {
		at = now()
	}
	at = at.UTC().Truncate(time.Second)
	return workflows.Signed{Release: release, IssuedAt: at, ExpiresAt: at.Add(life), Nonce: nonce}, nil
}

// SignDecision signs req as kind for the release run release (its first run ID,
// see ReleaseRun) of workflow workflowID. It sets req.Who to the signer's principal
// and fills the signature fields; a nonce and an issue time already set are kept
// (the Slack bridge derives both from the click, so that a replayed click is the
// same signed decision again).
func (s Signer) SignDecision(req *workflows.DecisionRequest, workflowID, release, kind string) error {
	if strings.TrimSpace(s.Principal) == "" {
		return errors.New("sign: no principal: say who signs (--as NAME)")
	}
	signed, err := s.stamp(release, req.Nonce, req.IssuedAt)
	if err != nil {
		return err
	}
	req.Who = s.Principal
	req.Signed = signed
	sig, err := signing.SignStatement(s.Key, req.Statement(workflowID, kind))
	if err != nil {
		return err
	}
	req.Signature = sig
	return nil
}

// signStart signs the start of p's release, with the plan's allowed signers.
func (s Signer) signStart(workflowID string, p plan.Plan, allowedSigners string) (*workflows.Signed, error) {
	req := workflows.DecisionRequest{Comment: workflows.StartComment(p, allowedSigners), Source: "cli"}
	if err := s.SignDecision(&req, workflowID, "", workflows.StartKind); err != nil {
		return nil, fmt.Errorf("sign the start: %w", err)
	}
	return &req.Signed, nil
}

// ReleaseRun is the identity of the model's current release that signatures name:
// the ID of its first run, which continue-as-new keeps.
func ReleaseRun(ctx context.Context, c client.Client, model string) (string, error) {
	id := workflows.WorkflowID(model)
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return "", notFoundOr(model, fmt.Errorf("find the release of model %s to sign for: %w", model, err), err)
	}
	info := desc.GetWorkflowExecutionInfo()
	if first := info.GetFirstRunId(); first != "" {
		return first, nil
	}
	return info.GetExecution().GetRunId(), nil
}

// readAllowedSigners reads the plan's allowed-signers file (relative to the plan's
// folder) and checks it.
func readAllowedSigners(path, planDir string) (string, error) {
	if path == "" {
		return "", nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(planDir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("approval.allowedSigners: %w", err)
	}
	if len(b) > workflows.MaxTrustText {
		return "", fmt.Errorf("approval.allowedSigners %s is %d bytes, more than the %d a release carries", path, len(b), workflows.MaxTrustText)
	}
	signers, err := signing.ParseAllowedSigners(b)
	if err != nil {
		return "", fmt.Errorf("approval.allowedSigners %s: %w", path, err)
	}
	if len(signers) == 0 {
		return "", fmt.Errorf("approval.allowedSigners %s lists no keys", path)
	}
	return string(b), nil
}
