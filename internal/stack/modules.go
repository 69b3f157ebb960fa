package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
)

// ModuleDir is where the Go module cache holds module@version (downloading it through
// the module proxy if needed): CRDs and database schemas come from their projects'
// own modules, at the versions we pin.
func ModuleDir(ctx context.Context, module string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
	// Outside any module, so that no go.mod or go.sum is touched.
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", err
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", module, m.Error)
	}
	return m.Dir, nil
}
