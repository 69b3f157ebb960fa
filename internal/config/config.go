// Package config reads mlrelease's settings from MLRELEASE_* environment variables.
// Temporal's own TEMPORAL_* settings are read by go.temporal.io/sdk/contrib/envconfig,
// so the Temporal CLI and mlrelease share one configuration.
package config

import (
	"fmt"

	"github.com/kelseyhightower/envconfig"
)

// Prefix is the prefix of every mlrelease environment variable.
const Prefix = "mlrelease"

// Gateway configures the data-plane gateway.
type Gateway struct {
	// Listen is the address of the data plane, admin API and /metrics.
	Listen string `envconfig:"GATEWAY_LISTEN" default:"127.0.0.1:8080"`
	// AdminToken, when set, is the bearer token the admin API requires. A secret.
	AdminToken string `envconfig:"GATEWAY_ADMIN_TOKEN"`
}

// Worker configures the Temporal worker and the clients its activities hold.
type Worker struct {
	TaskQueue string `envconfig:"TASK_QUEUE" default:"mlrelease"`
	// RegistryPath is the local SQLite registry's file.
	RegistryPath string `envconfig:"REGISTRY_PATH" default:".mlrelease/registry.db"`
	// GatewayURL is the gateway's base URL; the deployer drives its admin API.
	GatewayURL        string `envconfig:"GATEWAY_URL" default:"http://127.0.0.1:8080"`
	GatewayAdminToken string `envconfig:"GATEWAY_ADMIN_TOKEN"`
	PrometheusURL     string `envconfig:"PROMETHEUS_URL" default:"http://127.0.0.1:9090"`
	// Listen serves the worker's /metrics (and later the Slack endpoint).
	Listen string `envconfig:"WORKER_LISTEN" default:"127.0.0.1:8090"`
	// WebUIURL is where release links in notifications point.
	WebUIURL string `envconfig:"WEB_UI_URL" default:"http://localhost:8233"`
}

// Load fills c from the environment, applying defaults.
func Load[T any](c *T) error {
	if err := envconfig.Process(Prefix, c); err != nil {
		return fmt.Errorf("read MLRELEASE_* settings: %w", err)
	}
	return nil
}
