package registry

import "fmt"

// Kinds of registry that Open knows.
const (
	KindSQLite = "sqlite"
	KindMLflow = "mlflow"
)

// Open is the one place a registry is picked by configuration (MLRELEASE_REGISTRY):
// the worker, the CLI and make run all call it. sqlitePath is the local file;
// MLflow is configured by its own MLFLOW_TRACKING_* variables.
func Open(kind, sqlitePath string) (Registry, error) {
	switch kind {
	case "", KindSQLite:
		return OpenSQLite(sqlitePath)
	case KindMLflow:
		return NewMLflow(MLflowOptionsFromEnv())
	}
	return nil, fmt.Errorf("%w: MLRELEASE_REGISTRY=%q: want %q or %q", ErrInvalid, kind, KindSQLite, KindMLflow)
}
