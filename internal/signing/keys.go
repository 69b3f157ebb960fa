package signing

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
)

// DemoKeys makes, once, an ed25519 key for each principal in dir (dir/NAME and
// dir/NAME.pub, unencrypted, as `ssh-keygen -t ed25519 -N ""` writes them) and an
// allowed-signers file trusting them for mlrelease's namespace at allowedSigners.
// Keys already there are kept, so a demo set up again keeps its people. It returns
// the signers by principal. For demos and tests: real people bring their own keys.
func DemoKeys(dir, allowedSigners string, principals ...string) (map[string]ssh.Signer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	signers := map[string]ssh.Signer{}
	var lines []string
	for _, who := range principals {
		path := filepath.Join(dir, who)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := writeKey(path, who); err != nil {
				return nil, fmt.Errorf("key of %s: %w", who, err)
			}
		}
		k, err := LoadSigner(path)
		if err != nil {
			return nil, err
		}
		signers[who] = k
		lines = append(lines, who+` namespaces="`+Namespace+`" `+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey())))+" demo-"+who)
	}
	if err := os.WriteFile(allowedSigners, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	return signers, nil
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
