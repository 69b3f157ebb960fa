package main

import (
	"path/filepath"

	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/signing"
)

// demoPeople sign the demo's decisions: each gets an SSH key under .mlrelease/keys/,
// and the worker trusts them through .mlrelease/allowed_signers (issue 12).
var demoPeople = []string{"alice", "bob"}

// demoKeys makes (once) the demo people's keys and the allowed-signers file, and
// returns the file's path and the signers by name.
func demoKeys(state string) (string, map[string]*release.Signer, error) {
	allowed := filepath.Join(state, "allowed_signers")
	keys, err := signing.DemoKeys(filepath.Join(state, "keys"), allowed, demoPeople...)
	if err != nil {
		return "", nil, err
	}
	signers := map[string]*release.Signer{}
	for who, k := range keys {
		signers[who] = &release.Signer{Key: k, Principal: who}
	}
	return allowed, signers, nil
}
