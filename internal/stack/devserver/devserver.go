// Package devserver starts the Temporal dev server for tests and benchmarks: the
// Temporal CLI from the repository's bin/ (built once by `make temporal`) or PATH,
// with the search attributes releases set. A missing CLI is an error, never a skip.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"

	"github.com/mlrelease/mlrelease/workflows"
)

// Start starts a dev server on free loopback ports with the release search
// attributes; its output goes to out (nil discards it). Stop it with Stop.
func Start(ctx context.Context, out io.Writer) (*testsuite.DevServer, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	cli, err := Find(root, "temporal")
	if err != nil {
		return nil, fmt.Errorf("%w: run `make temporal`", err)
	}
	if out == nil {
		out = io.Discard
	}
	srv, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  cli,
		ClientOptions: &client.Options{Namespace: "default", Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))},
		LogLevel:      "error",
		ExtraArgs:     SearchAttributeArgs(),
		Stdout:        out,
		Stderr:        out,
	})
	if err != nil {
		return nil, fmt.Errorf("start the Temporal dev server (%s): %w", cli, err)
	}
	return srv, nil
}

// SearchAttributeArgs registers the release search attributes on a dev server.
func SearchAttributeArgs() []string {
	var args []string
	for _, k := range workflows.SearchAttributes {
		t := "Keyword"
		if k.GetValueType() == enums.INDEXED_VALUE_TYPE_INT {
			t = "Int"
		}
		args = append(args, "--search-attribute", k.GetName()+"="+t)
	}
	return args
}

// Find returns the path of a program: bin/NAME under root first, then PATH.
func Find(root, name string) (string, error) {
	p := filepath.Join(root, "bin", name)
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found in %s or on PATH", name, filepath.Join(root, "bin"))
}

// Root finds the repository root (the folder with go.mod) from the working directory
// up; go test runs in the package's folder, so tests find it too.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
