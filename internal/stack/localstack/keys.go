package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/signing"
)

// demoPeople sign the demo's decisions: each gets an SSH key under .mlrelease/keys/,
// and the worker trusts them through .mlrelease/allowed_signers (issue 12).
var demoPeople = []string{"alice", "bob"}

// demoKeys makes (once) the demo people's keys and the allowed-signers file, and
// returns the file's path and the signers by name.
func demoKeys(state string) (string, map[string]*release.Signer, error) {
	dir := filepath.Join(state, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	signers := map[string]*release.Signer{}
	var lines []string
	for _, who := range demoPeople {
		path := filepath.Join(dir, who)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := writeKey(path, who); err != nil {
				return "", nil, fmt.Errorf("demo key of %s: %w", who, err)
			}
		}
		k, err := signing.LoadSigner(path)
		if err != nil {
			return "", nil, err
		}
		signers[who] = &release.Signer{Key: k, Principal: who}
		lines = append(lines, who+` namespaces="`+signing.Namespace+`" `+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey())))+" demo-"+who)
	}
	allowed := filepath.Join(state, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return "", nil, err
	}
	return allowed, signers, nil
}

// writeKey writes an unencrypted OpenSSH ed25519 key pair, as ssh-keygen -N "" would.
func writeKey(path, comment string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment + "\n"
	return os.WriteFile(path+".pub", []byte(line), 0o644)
}
