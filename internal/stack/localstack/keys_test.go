package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/signing"
)

// The demo keys are OpenSSH's own format (ssh-keygen reads them), made once, and
// the allowed-signers file names them.
func TestDemoKeys(t *testing.T) {
	state := t.TempDir()
	allowed, people, err := demoKeys(state)
	require.NoError(t, err)
	require.Len(t, people, 2)
	out, err := exec.Command("ssh-keygen", "-y", "-f", filepath.Join(state, "keys", "bob")).CombinedOutput()
	require.NoError(t, err, "ssh-keygen reads the demo key: %s", out)
	b, err := os.ReadFile(allowed)
	require.NoError(t, err)
	signers, err := signing.ParseAllowedSigners(b)
	require.NoError(t, err)
	require.Len(t, signers, 2)

	_, again, err := demoKeys(state)
	require.NoError(t, err)
	require.Equal(t, people["alice"].Fingerprint(), again["alice"].Fingerprint(), "kept across runs")
}
