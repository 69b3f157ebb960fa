package signing

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

// keygen makes a key pair with Debian's ssh-keygen and returns the private key's path.
func keygen(t *testing.T, dir, name, typ string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	args := []string{"-q", "-t", typ, "-N", "", "-C", name, "-f", path}
	if typ == "rsa" {
		args = append(args, "-b", "2048")
	}
	out, err := exec.Command("ssh-keygen", args...).CombinedOutput()
	require.NoError(t, err, "ssh-keygen: %s", out)
	return path
}

func publicLine(t *testing.T, keyPath string) string {
	t.Helper()
	b, err := os.ReadFile(keyPath + ".pub")
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

func statement() Statement {
	at := time.Date(2026, 11, 29, 16, 0, 0, 0, time.UTC)
	return Statement{Workflow: "release/wine", Release: "0196-run", Kind: "approve", Signer: "alice", Source: "cli",
		Comment: "metrics look right\nsigned: \"bob\"", IssuedAt: at, ExpiresAt: at.Add(10 * time.Minute), Nonce: "n1"}
}

// TestOpenSSHSignsMlreleaseVerifies: a signature made by `ssh-keygen -Y sign` over a
// statement verifies in mlrelease, for each key type OpenSSH signs with.
func TestOpenSSHSignsMlreleaseVerifies(t *testing.T) {
	dir := t.TempDir()
	msg := statement().Message()
	msgPath := filepath.Join(dir, "statement")
	require.NoError(t, os.WriteFile(msgPath, msg, 0o600))
	for _, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(typ, func(t *testing.T) {
			key := keygen(t, dir, "alice-"+typ, typ)
			out, err := exec.Command("ssh-keygen", "-Y", "sign", "-f", key, "-n", Namespace, msgPath).CombinedOutput()
			require.NoError(t, err, "ssh-keygen -Y sign: %s", out)
			sig, err := os.ReadFile(msgPath + ".sig")
			require.NoError(t, err)
			require.NoError(t, os.Remove(msgPath+".sig"))

			pub, err := Verify(string(sig), Namespace, msg)
			require.NoError(t, err)
			allowed, err := ParseAllowedSigners([]byte(`alice namespaces="mlrelease" ` + publicLine(t, key) + "\n"))
			require.NoError(t, err)
			line, err := allowed.Check("alice", pub, Namespace, time.Now())
			require.NoError(t, err)
			assert.Equal(t, 1, line.Line)

			_, err = Verify(string(sig), Namespace, append(msg, 'x'))
			require.ErrorContains(t, err, "does not match the message", "a changed statement fails")
			_, err = Verify(string(sig), "git", msg)
			require.ErrorContains(t, err, `namespace "mlrelease", not "git"`)
			_, err = allowed.Check("bob", pub, Namespace, time.Now())
			require.ErrorContains(t, err, `may not sign as "bob"`)
		})
	}
}

// TestMlreleaseSignsOpenSSHVerifies: mlrelease's signatures, from a key file and
// through ssh-agent, verify with `ssh-keygen -Y verify` against an allowed-signers
// file; the wrong principal or namespace does not.
func TestMlreleaseSignsOpenSSHVerifies(t *testing.T) {
	dir := t.TempDir()
	msg := statement().Message()
	msgPath := filepath.Join(dir, "statement")
	require.NoError(t, os.WriteFile(msgPath, msg, 0o600))
	verify := func(t *testing.T, allowed, principal, namespace, sig string) error {
		t.Helper()
		sigPath := filepath.Join(dir, "sig")
		require.NoError(t, os.WriteFile(sigPath, []byte(sig), 0o600))
		cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", principal, "-n", namespace, "-s", sigPath)
		cmd.Stdin = bytes.NewReader(msg)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("ssh-keygen -Y verify: %s", out)
		}
		return err
	}
	for _, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(typ, func(t *testing.T) {
			key := keygen(t, dir, "bob-"+typ, typ)
			allowed := filepath.Join(dir, "allowed-"+typ)
			require.NoError(t, os.WriteFile(allowed, []byte("bob,carol namespaces=\"mlrelease\" "+publicLine(t, key)+"\n"), 0o600))
			s, err := LoadSigner(key)
			require.NoError(t, err)
			sig, err := SignStatement(s, statement())
			require.NoError(t, err)
			require.NoError(t, verify(t, allowed, "bob", Namespace, sig), "OpenSSH accepts mlrelease's signature")
			require.Error(t, verify(t, allowed, "mallory", Namespace, sig), "not for another principal")
			require.Error(t, verify(t, allowed, "bob", "git", sig), "not in another namespace")
		})
	}

	t.Run("ssh-agent", func(t *testing.T) {
		key := keygen(t, dir, "agent-key", "ed25519")
		sock := filepath.Join(dir, "agent.sock")
		agentCmd := exec.Command("ssh-agent", "-D", "-a", sock)
		require.NoError(t, agentCmd.Start())
		defer func() { _ = agentCmd.Process.Kill(); _ = agentCmd.Wait() }()
		require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 10*time.Second, 20*time.Millisecond)
		t.Setenv("SSH_AUTH_SOCK", sock)
		add := exec.Command("ssh-add", key)
		out, err := add.CombinedOutput()
		require.NoError(t, err, "ssh-add: %s", out)
		// Only the public key on disk: the agent signs.
		pubOnly := filepath.Join(dir, "signing.pub")
		require.NoError(t, os.WriteFile(pubOnly, []byte(publicLine(t, key)+"\n"), 0o600))
		for _, path := range []string{pubOnly, ""} {
			s, err := LoadSigner(path)
			require.NoError(t, err, "key %q", path)
			sig, err := SignStatement(s, statement())
			require.NoError(t, err)
			allowed := filepath.Join(dir, "allowed-agent")
			require.NoError(t, os.WriteFile(allowed, []byte("bob "+publicLine(t, key)+"\n"), 0o600))
			require.NoError(t, verify(t, allowed, "bob", Namespace, sig))
		}
	})
}

func TestAllowedSigners(t *testing.T) {
	dir := t.TempDir()
	a := keygen(t, dir, "a", "ed25519")
	b := keygen(t, dir, "b", "ed25519")
	text := "# team\n\n" +
		`alice,U0ALICE namespaces="mlrelease,git",valid-after="20260101",valid-before="20270101Z" ` + publicLine(t, a) + "\n" +
		`"slack:*,!slack:U0EVE" ` + publicLine(t, b) + " bridge\n"
	as, err := ParseAllowedSigners([]byte(text))
	require.NoError(t, err)
	require.Len(t, as, 2)
	assert.Equal(t, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), as[0].ValidAfter)
	keyA, keyB := as[0].Key, as[1].Key

	in := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	_, err = as.Check("U0ALICE", keyA, Namespace, in)
	require.NoError(t, err)
	_, err = as.Check("alice", keyA, Namespace, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	require.ErrorContains(t, err, "valid only before 2027-01-01T00:00:00Z")
	_, err = as.Check("alice", keyA, Namespace, time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC))
	require.ErrorContains(t, err, "valid only after")
	_, err = as.Check("alice", keyA, "file", in)
	require.ErrorContains(t, err, `allows namespaces "mlrelease,git", not "file"`)
	_, err = as.Check("slack:U0BOB", keyB, Namespace, in)
	require.NoError(t, err)
	_, err = as.Check("slack:U0EVE", keyB, Namespace, in)
	require.ErrorContains(t, err, "may not sign as", "an excluded principal")
	_, err = as.Check("alice", keyB, Namespace, in)
	require.ErrorContains(t, err, "may not sign as \"alice\"", "the bridge key signs only for Slack principals")
	other, err := ssh.ParsePublicKey(keyA.Marshal())
	require.NoError(t, err)
	_, err = AllowedSigners{as[1]}.Check("alice", other, Namespace, in)
	require.ErrorContains(t, err, "is not in the release's allowed signers")

	for _, bad := range []struct{ line, want string }{
		{"alice cert-authority " + publicLine(t, a), "cert-authority is not supported"},
		{"alice frobnicate " + publicLine(t, a), "unknown option"},
		{`alice valid-after="2026" ` + publicLine(t, a), "valid-after"},
		{"alice ssh-ed25519 notbase64!", "line 1"},
		{"alice", "no key after the principals"},
	} {
		_, err := ParseAllowedSigners([]byte(bad.line + "\n"))
		require.ErrorContains(t, err, bad.want, bad.line)
	}
}

func TestMatchPatterns(t *testing.T) {
	for _, tt := range []struct {
		s, list string
		want    bool
	}{
		{"alice", "alice", true},
		{"alice", "bob,alice", true},
		{"alice", "al*", true},
		{"alice", "a?ice", true},
		{"alice", "*,!alice", false},
		{"a/b", "*", true},
		{"alice", "bob", false},
		{"slack:U1", "slack:*", true},
		{"xslack:U1", "slack:*", false},
	} {
		assert.Equal(t, tt.want, MatchPatterns(tt.s, tt.list), "%q in %q", tt.s, tt.list)
	}
}

func TestStatementMessageQuotesFields(t *testing.T) {
	st := statement()
	st.Groups = []string{"S1", "S 2"}
	got := string(st.Message())
	assert.Equal(t, "mlrelease decision v1\n"+
		"workflow \"release/wine\"\nrelease \"0196-run\"\nkind \"approve\"\nsigner \"alice\"\nname \"\"\nsource \"cli\"\n"+
		"comment \"metrics look right\\nsigned: \\\"bob\\\"\"\ngroups [\"S1\" \"S 2\"]\n"+
		"issued \"2026-11-29T16:00:00Z\"\nexpires \"2026-11-29T16:10:00Z\"\nnonce \"n1\"\n", got)
}
