package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// MLflowVersion is the MLflow release `make mlflow` installs (examples/mlflow/requirements.txt).
const MLflowVersion = "3.17.2"

// MLflowVenv is the virtual environment `make mlflow` creates: MLRELEASE_MLFLOW_VENV,
// else ${XDG_CACHE_HOME:-$HOME/.cache}/mlrelease/venv-mlflow-VERSION, outside the
// clone so that every checkout on the machine shares it.
func MLflowVenv() string {
	if v := os.Getenv("MLRELEASE_MLFLOW_VENV"); v != "" {
		return v
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "mlrelease", "venv-mlflow-"+MLflowVersion)
}

// FindMLflow returns the venv's bin folder, or an error that says to run make mlflow.
func FindMLflow() (string, error) {
	bin := filepath.Join(MLflowVenv(), "bin")
	for _, name := range []string{"mlflow", "python"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return "", fmt.Errorf("MLflow %s is not installed in %s: run `make mlflow`", MLflowVersion, MLflowVenv())
		}
	}
	if _, err := os.Stat(filepath.Join(MLflowVenv(), ".installed")); err != nil {
		return "", fmt.Errorf("the MLflow virtual environment %s is incomplete: run `make mlflow`", MLflowVenv())
	}
	return bin, nil
}

// mlflowEnv puts the venv first on PATH: `mlflow models serve` runs `uvicorn` by name.
func mlflowEnv(bin string, extra ...string) []string {
	return append([]string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")}, extra...)
}

// StartMLflowServer runs `mlflow server` on a free loopback port with a SQLite
// backend and artifacts under dir, and waits for its /health. It returns the
// tracking URI. The process belongs to s.
func StartMLflowServer(ctx context.Context, s *Stack, dir string) (string, error) {
	bin, err := FindMLflow()
	if err != nil {
		return "", err
	}
	addr, err := FreePort()
	if err != nil {
		return "", err
	}
	host, port, _ := strings.Cut(addr, ":")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	args := []string{"server", "--backend-store-uri", "sqlite:///" + filepath.Join(dir, "mlflow.db"),
		"--artifacts-destination", filepath.Join(dir, "artifacts"), "--host", host, "--port", port, "--workers", "1"}
	p, err := s.Start("mlflow-server", filepath.Join(bin, "mlflow"), args, mlflowEnv(bin)...)
	if err != nil {
		return "", err
	}
	uri := "http://" + addr
	if err := WaitReady(ctx, p, uri+"/health"); err != nil {
		return "", err
	}
	return uri, nil
}

// TrainedVersion is one version examples/mlflow/train.py registered.
type TrainedVersion struct {
	Quality      string  `json:"quality"` // good or bad
	Kind         string  `json:"kind"`
	EvalAccuracy float64 `json:"eval_accuracy"`
	Run          string  `json:"run"`
}

// TrainMLflowExample runs examples/mlflow/train.py against the tracking server: it
// registers versions 1 (champion), 2 (good) and 3 (bad) of model.
func TrainMLflowExample(ctx context.Context, root, trackingURI, model string) (map[string]TrainedVersion, error) {
	bin, err := FindMLflow()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "python"), filepath.Join(root, "examples/mlflow/train.py"), "--model", model)
	cmd.Env = append(os.Environ(), mlflowEnv(bin, "MLFLOW_TRACKING_URI="+trackingURI)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("train the MLflow example: %w\n%s", err, tail(stderr.String(), 3000))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var versions map[string]TrainedVersion
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &versions); err != nil {
		return nil, fmt.Errorf("train the MLflow example: read its summary: %w\n%s", err, out)
	}
	return versions, nil
}

// ServeMLflowModel runs MLflow's scoring server for one registered version
// (`mlflow models serve --env-manager local`) on a free loopback port and waits for
// its /ping. It returns the server's base URL; /invocations takes dataframe_split.
func ServeMLflowModel(ctx context.Context, s *Stack, trackingURI, model, version string) (string, error) {
	bin, err := FindMLflow()
	if err != nil {
		return "", err
	}
	addr, err := FreePort()
	if err != nil {
		return "", err
	}
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"models", "serve", "-m", "models:/" + model + "/" + version, "--env-manager", "local", "-h", host, "-p", port}
	p, err := s.Start("mlflow-serve-"+model+"-"+version, filepath.Join(bin, "mlflow"), args, mlflowEnv(bin, "MLFLOW_TRACKING_URI="+trackingURI)...)
	if err != nil {
		return "", err
	}
	url := "http://" + addr
	if err := WaitReady(ctx, p, url+"/ping"); err != nil {
		return "", err
	}
	return url, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
