// Package config reads mlrelease's settings from MLRELEASE_* environment variables.
// Temporal's own TEMPORAL_* settings are read by go.temporal.io/sdk/contrib/envconfig,
// so the Temporal CLI and mlrelease share one configuration.
package config

import (
	"fmt"
	"time"

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
	// StateFile is where applied routes are saved, so a restarted gateway serves the
	// same routes; empty keeps them in memory only.
	StateFile string `envconfig:"GATEWAY_STATE_FILE"`
	// RoutingKeyHeader names the header whose value always reaches the same variant at
	// a given weight (sticky assignment); empty routes every request at random.
	RoutingKeyHeader string `envconfig:"GATEWAY_ROUTING_KEY_HEADER" default:"X-User-ID"`
	// ShadowTimeout bounds one mirrored call; ShadowQueue is how many copies may wait.
	ShadowTimeout time.Duration `envconfig:"GATEWAY_SHADOW_TIMEOUT" default:"2s"`
	ShadowQueue   int           `envconfig:"GATEWAY_SHADOW_QUEUE" default:"256"`
	// ShadowMaxBytes bounds the memory of the shadow copies queued or in flight
	// (bodies and headers); a copy that would go over is dropped and counted.
	ShadowMaxBytes int64 `envconfig:"GATEWAY_SHADOW_MAX_BYTES" default:"67108864"`
	// FeedbackTTL is how long a served prediction waits for its label; FeedbackCapacity
	// is the most predictions kept for that.
	FeedbackTTL      time.Duration `envconfig:"GATEWAY_FEEDBACK_TTL" default:"1h"`
	FeedbackCapacity int           `envconfig:"GATEWAY_FEEDBACK_CAPACITY" default:"100000"`
	// FeedbackToken, when set, is the bearer token POST /feedback requires, so that
	// only the holder (the labelling pipeline) can label predictions. A secret.
	FeedbackToken string `envconfig:"GATEWAY_FEEDBACK_TOKEN"`
	// Peers names the gateway's other replicas, as MLRELEASE_GATEWAY_URL does for the
	// worker (a comma list, or dns+http://NAME:PORT): a replica takes their newest
	// routes when it starts, and passes them feedback it cannot join.
	Peers string `envconfig:"GATEWAY_PEERS"`
}

// Worker configures the Temporal worker and the clients its activities hold.
type Worker struct {
	TaskQueue string `envconfig:"TASK_QUEUE" default:"mlrelease"`
	// Deployment, when set, runs the worker as a version of this Worker Deployment
	// (Temporal's Worker Versioning), its build ID the binary's version; releases are
	// pinned to the version they started on. Empty runs it unversioned.
	Deployment string `envconfig:"WORKER_DEPLOYMENT"`
	// Tuning is the worker's capacity (MLRELEASE_WORKER_*): pollers, slots, sticky
	// cache and rate limits.
	Tuning Tuning `envconfig:"WORKER"`
	// Registry selects the model registry: "sqlite" (the local file at RegistryPath)
	// or "mlflow" (the server MLflow's own MLFLOW_TRACKING_URI, MLFLOW_TRACKING_TOKEN
	// or MLFLOW_TRACKING_USERNAME/PASSWORD name).
	Registry string `envconfig:"REGISTRY" default:"sqlite"`
	// RegistryPath is the local SQLite registry's file.
	RegistryPath string `envconfig:"REGISTRY_PATH" default:".mlrelease/registry.db"`
	// Watch starts releases from the registry; off unless Watch.PlansDir is set.
	Watch Watch `envconfig:"WATCH"`
	// GatewayURL is the gateway's base URL; the deployer drives its admin API.
	GatewayURL        string `envconfig:"GATEWAY_URL" default:"http://127.0.0.1:8080"`
	GatewayAdminToken string `envconfig:"GATEWAY_ADMIN_TOKEN"`
	// Kubeconfig is the kubeconfig file of the cluster whose HTTPRoutes and
	// InferenceServices plans name (deploy.kind); empty inside a cluster uses the pod's
	// service account, and elsewhere leaves Kubernetes targets off.
	Kubeconfig    string `envconfig:"KUBECONFIG"`
	PrometheusURL string `envconfig:"PROMETHEUS_URL" default:"http://127.0.0.1:9090"`
	// Listen serves the worker's /metrics (and later the Slack endpoint).
	Listen string `envconfig:"WORKER_LISTEN" default:"127.0.0.1:8090"`
	// WebUIURL is where release links in notifications point.
	WebUIURL string `envconfig:"WEB_UI_URL" default:"http://localhost:8233"`
	// ReportURL is where people reach the worker's release reports (/releases/MODEL):
	// links in Slack, the CLI and the Web UI point there.
	ReportURL string `envconfig:"REPORT_URL" default:"http://127.0.0.1:8090"`
	// Slack posts release threads and takes approvals; off when no bot token is set.
	Slack Slack `envconfig:"SLACK"`
	// AllowedSigners is an allowed-signers file (ssh-keygen's format): the keys whose
	// signed decisions every release started on this worker trusts. When set it is the
	// root of trust: a plan's own approval.allowedSigners count only when one of these
	// keys signed the start, and approval.unsigned is not honoured.
	AllowedSigners string `envconfig:"ALLOWED_SIGNERS"`
}

// Tuning sizes the worker (MLRELEASE_WORKER_*). Zero keeps the default named.
type Tuning struct {
	// WorkflowPollers and ActivityPollers fix the number of pollers of each task
	// queue; 0 lets the SDK scale them with the backlog (poller autoscaling, between
	// 1 and MaxPollers).
	WorkflowPollers int `envconfig:"WORKFLOW_POLLERS"`
	ActivityPollers int `envconfig:"ACTIVITY_POLLERS"`
	MaxPollers      int `envconfig:"MAX_POLLERS" default:"32"`
	// WorkflowTaskSlots and ActivitySlots bound the tasks the worker runs at once
	// (SDK default 1,000 each); ActivitySlots bounds activities and local activities
	// (analysis rounds, registry writes) each.
	WorkflowTaskSlots int `envconfig:"WORKFLOW_TASK_SLOTS"`
	ActivitySlots     int `envconfig:"ACTIVITY_SLOTS"`
	// StickyCacheSize is how many releases the worker keeps in memory between their
	// tasks (SDK default 10,000); a release out of the cache replays its history.
	StickyCacheSize int `envconfig:"STICKY_CACHE_SIZE"`
	// ActivitiesPerSecond caps the activities this worker starts, and the local
	// activities likewise (0: no cap), to spare Prometheus, the registry or the
	// gateway.
	ActivitiesPerSecond float64 `envconfig:"ACTIVITIES_PER_SECOND"`
}

// Watch configures the release watcher (MLRELEASE_WATCH_*): a long-running
// workflow that starts a release when a version gets the alias or tag.
type Watch struct {
	// PlansDir holds one plan per model, MODEL.yaml; a version's mlrelease.plan tag
	// may name another plan file there. Empty turns the watcher off.
	PlansDir string `envconfig:"PLANS_DIR"`
	// Alias marks a version for release (default challenger); Tag (KEY=VALUE), when
	// set, marks it instead.
	Alias string `envconfig:"ALIAS" default:"challenger"`
	Tag   string `envconfig:"TAG"`
	// Interval is how often the registry is polled.
	Interval time.Duration `envconfig:"INTERVAL" default:"30s"`
}

// Slack configures the Slack app (MLRELEASE_SLACK_*). The three tokens are secrets:
// they come only from the environment and are never logged.
type Slack struct {
	// BotToken (xoxb-...) posts and edits messages and reads users and user groups.
	BotToken string `envconfig:"BOT_TOKEN"`
	// Channel is the channel ID (or name) release threads go to.
	Channel string `envconfig:"CHANNEL"`
	// SigningSecret verifies HTTP interactions at /slack/interactions on the
	// worker's listener; unset disables that endpoint.
	SigningSecret string `envconfig:"SIGNING_SECRET"`
	// AppToken (xapp-...) receives interactions over Socket Mode, with no public
	// URL; unset disables Socket Mode.
	AppToken string `envconfig:"APP_TOKEN"`
	// APIURL overrides Slack's Web API base URL (tests, proxies).
	APIURL string `envconfig:"API_URL"`
	// BridgeKey is the SSH private key file (unencrypted, readable by the worker only)
	// with which the worker signs the decisions it takes from Slack, after checking
	// Slack's signature. Releases trust it for slack:* principals only. Unset: Slack
	// clicks are refused by releases that check signatures.
	BridgeKey string `envconfig:"BRIDGE_KEY"`
}

// Enabled reports whether Slack is configured.
func (s Slack) Enabled() bool { return s.BotToken != "" }

// String shows the settings without the secrets, so that logging it is safe.
func (s Slack) String() string {
	set := func(v string) string {
		if v == "" {
			return "unset"
		}
		return "set"
	}
	return fmt.Sprintf("slack{channel: %q, botToken: %s, signingSecret: %s, appToken: %s}", s.Channel, set(s.BotToken), set(s.SigningSecret), set(s.AppToken))
}

// Load fills c from the environment, applying defaults.
func Load[T any](c *T) error {
	if err := envconfig.Process(Prefix, c); err != nil {
		return fmt.Errorf("read MLRELEASE_* settings: %w", err)
	}
	return nil
}
