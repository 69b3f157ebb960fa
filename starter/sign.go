package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/signing"
	"github.com/mlrelease/mlrelease/workflows"
)

// signingFlags are the flags of every command that signs: who signs and with which key.
type signingFlags struct {
	as       *string
	key      *string
	ttl      *time.Duration
	unsigned *bool
}

func addSigningFlags(fs *flag.FlagSet, what string) signingFlags {
	return signingFlags{
		as:       fs.String("as", "", "the principal you sign as: your name in the release's allowed signers (default: your OS user)"),
		key:      fs.String("key", "", "the SSH key to sign with: a private key file, or a public key whose private key ssh-agent holds (default: MLRELEASE_SIGNING_KEY, else the one key in ssh-agent)"),
		ttl:      fs.Duration("ttl", release.DefaultSignatureLifetime, "how long the signature stays valid (at most 1h)"),
		unsigned: fs.Bool("unsigned", false, "send "+what+" without a signature: only releases whose plan says approval.unsigned take it"),
	}
}

// signer loads the key and says who signs; nil when --unsigned.
func (f signingFlags) signer() (*release.Signer, string, error) {
	who, err := identity(*f.as)
	if err != nil {
		return nil, "", err
	}
	if *f.unsigned {
		return nil, who, nil
	}
	if *f.ttl <= 0 || *f.ttl > workflows.MaxSignatureLifetime {
		return nil, "", usagef("--ttl %s: want more than 0s and at most %s", *f.ttl, workflows.MaxSignatureLifetime)
	}
	path := *f.key
	if path == "" {
		path = os.Getenv("MLRELEASE_SIGNING_KEY")
	}
	k, err := signing.LoadSigner(path)
	if err != nil {
		return nil, "", fmt.Errorf("%w (or pass --unsigned for a release whose plan says approval.unsigned)", err)
	}
	return &release.Signer{Key: k, Principal: who, Lifetime: *f.ttl}, who, nil
}

// sign prints a signed decision as the input of a Temporal update: for
// `temporal workflow update execute --input`, or the Web UI's "Send an Update".
func (a *app) sign(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	comment := fs.String("comment", "", "why (required to reject or abort)")
	run := fs.String("release", "", "the release's first run ID (default: ask Temporal for the model's current release)")
	sf := addSigningFlags(fs, "")
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	kind, model := pos[0], pos[1]
	if !slices.Contains(workflows.Decisions, kind) {
		return usagef("%q is not a decision: want one of %s", kind, strings.Join(workflows.Decisions, ", "))
	}
	if (kind == workflows.Reject || kind == workflows.Abort) && strings.TrimSpace(*comment) == "" {
		return usagef("--comment is required: say why you %s", kind)
	}
	if *sf.unsigned {
		return usagef("--unsigned: sign makes signatures; an unsigned input is just {\"who\": ..., \"comment\": ...}")
	}
	s, _, err := sf.signer()
	if err != nil {
		return err
	}
	releaseRun := *run
	if releaseRun == "" {
		c, _, err := a.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		if releaseRun, err = release.ReleaseRun(ctx, c, model); err != nil {
			return err
		}
	}
	req := workflows.DecisionRequest{Comment: *comment, Source: "temporal"}
	id := workflows.WorkflowID(model)
	if err := s.SignDecision(&req, id, releaseRun, kind); err != nil {
		return err
	}
	input, err := json.Marshal(req)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, string(input))
	fmt.Fprintf(a.stderr, "signed %s of %s as %s with %s, valid until %s; send it with:\n  temporal workflow update execute --workflow-id %s --name %s --input '<the line above>'\n",
		kind, id, s.Principal, s.Fingerprint(), req.ExpiresAt.Format(time.RFC3339), id, kind)
	return nil
}
