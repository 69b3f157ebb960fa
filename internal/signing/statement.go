package signing

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Statement is what a signed decision says: who decides what about which release,
// why, when, until when the signature counts, and a nonce that makes it usable once.
type Statement struct {
	// Workflow is the release's workflow ID; Release the ID of its first run, which
	// stays the same across continue-as-new and differs for every release.
	Workflow string
	Release  string
	// Kind is the decision (approve, reject, pause, resume, abort) or "start".
	Kind string
	// Signer is the principal the key signs as (a name in the allowed signers).
	Signer string
	// Name, Source, Comment and Groups are the rest of the request, signed so that
	// none of them can be changed on the way.
	Name    string
	Source  string
	Comment string
	Groups  []string
	// IssuedAt and ExpiresAt bound when the signature counts.
	IssuedAt  time.Time
	ExpiresAt time.Time
	Nonce     string
}

// Message is the exact text that is signed: one quoted field a line, so that no
// field can spill into another. `ssh-keygen -Y sign -n mlrelease` over these bytes
// makes a valid signature (README, Security model, shows one).
func (s Statement) Message() []byte {
	var b bytes.Buffer
	b.WriteString("mlrelease decision v1\n")
	field := func(k, v string) { b.WriteString(k + " " + strconv.Quote(v) + "\n") }
	field("workflow", s.Workflow)
	field("release", s.Release)
	field("kind", s.Kind)
	field("signer", s.Signer)
	field("name", s.Name)
	field("source", s.Source)
	field("comment", s.Comment)
	groups := make([]string, len(s.Groups))
	for i, g := range s.Groups {
		groups[i] = strconv.Quote(g)
	}
	b.WriteString("groups [" + strings.Join(groups, " ") + "]\n")
	field("issued", s.IssuedAt.UTC().Format(time.RFC3339))
	field("expires", s.ExpiresAt.UTC().Format(time.RFC3339))
	field("nonce", s.Nonce)
	return b.Bytes()
}

// LoadSigner finds the key to sign with. keyPath may name a private key file
// (unencrypted; an encrypted one is looked up in ssh-agent by its public key), or a
// public key file whose private key ssh-agent holds, as git's user.signingKey does.
// With no keyPath, ssh-agent (SSH_AUTH_SOCK) must hold exactly one key.
func LoadSigner(keyPath string) (ssh.Signer, error) {
	if keyPath == "" {
		keys, err := agentSigners()
		if err != nil {
			return nil, fmt.Errorf("no signing key: pass --key FILE or set MLRELEASE_SIGNING_KEY (%w)", err)
		}
		switch len(keys) {
		case 0:
			return nil, errors.New("no signing key: ssh-agent holds no key; pass --key FILE or add one with ssh-add")
		case 1:
			return keys[0], nil
		}
		fps := make([]string, len(keys))
		for i, k := range keys {
			fps[i] = Fingerprint(k.PublicKey())
		}
		return nil, fmt.Errorf("ssh-agent holds %d keys (%s): say which with --key FILE.pub or MLRELEASE_SIGNING_KEY", len(keys), strings.Join(fps, ", "))
	}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if pub, _, _, _, err := ssh.ParseAuthorizedKey(data); err == nil {
		return fromAgent(pub, keyPath)
	}
	s, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) && missing.PublicKey != nil {
		return fromAgent(missing.PublicKey, keyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", keyPath, err)
	}
	return s, nil
}

func fromAgent(pub ssh.PublicKey, keyPath string) (ssh.Signer, error) {
	keys, err := agentSigners()
	if err != nil {
		return nil, fmt.Errorf("signing key %s needs ssh-agent: %w", keyPath, err)
	}
	for _, k := range keys {
		if bytes.Equal(k.PublicKey().Marshal(), pub.Marshal()) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("signing key %s (%s) is not in ssh-agent: add it with ssh-add", keyPath, Fingerprint(pub))
}

func agentSigners() ([]ssh.Signer, error) {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, errors.New("SSH_AUTH_SOCK is not set: no ssh-agent")
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("ssh-agent at SSH_AUTH_SOCK: %w", err)
	}
	// The connection stays open for the signers' lifetime: a CLI run.
	return agent.NewClient(conn).Signers()
}

// SignStatement signs st with s.
func SignStatement(s ssh.Signer, st Statement) (string, error) {
	return Sign(s, Namespace, st.Message())
}
