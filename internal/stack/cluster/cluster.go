// Package cluster runs a real Temporal cluster for tests and benchmarks: the
// Temporal server (go.temporal.io/server, built once by `make temporal-server` into
// bin/) on Debian's PostgreSQL, with its schema set up by the server's own SQL tool:
// the topology docker-compose.yml runs, on loopback.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mlrelease/mlrelease/internal/stack"
)

// serverModule is the Temporal server module@version that tools/temporalserver
// pins (the version the Temporal CLI's dev server embeds): bin/temporal-server is
// built from it, and the schema comes from it.
func serverModule(root string) (string, error) {
	gomod := filepath.Join(root, "tools", "temporalserver", "go.mod")
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "require" && f[1] == "go.temporal.io/server" {
			return f[1] + "@" + f[2], nil
		}
	}
	return "", fmt.Errorf("%s requires no go.temporal.io/server", gomod)
}

// Cluster is a running Temporal server on PostgreSQL.
type Cluster struct {
	// HostPort is the frontend's address.
	HostPort string
	procs    *stack.Stack
}

// Start starts PostgreSQL and the Temporal server under dir, sets up the schema and
// the default namespace. A missing binary is an error that says how to get it.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	root, err := stack.Root()
	if err != nil {
		return nil, err
	}
	server, err := stack.Find(root, "temporal-server")
	if err != nil {
		return nil, fmt.Errorf("%w: run `make temporal-server`", err)
	}
	sqlTool, err := stack.Find(root, "temporal-sql-tool")
	if err != nil {
		return nil, fmt.Errorf("%w: run `make temporal-server`", err)
	}
	pgBin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	module, err := serverModule(root)
	if err != nil {
		return nil, err
	}
	schema, err := stack.ModuleDir(ctx, module)
	if err != nil {
		return nil, err
	}
	c := &Cluster{procs: &stack.Stack{LogDir: filepath.Join(dir, "logs")}}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()

	pgAddr, err := c.startPostgres(ctx, dir, pgBin)
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(pgAddr, ":")
	for db, versioned := range map[string]string{
		"temporal":            "schema/postgresql/v12/temporal/versioned",
		"temporal_visibility": "schema/postgresql/v12/visibility/versioned",
	} {
		base := []string{"--plugin", "postgres12", "--ep", host, "-p", port, "-u", "temporal", "--db", db}
		for _, args := range [][]string{{"create-database"}, {"setup-schema", "-v", "0.0"}, {"update-schema", "-d", filepath.Join(schema, versioned)}} {
			cmd := exec.CommandContext(ctx, sqlTool, append(slices.Clone(base), args...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("temporal-sql-tool %s on %s: %w\n%s", args[0], db, err, out)
			}
		}
	}

	if err := c.startServer(ctx, dir, server, pgAddr); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// postgresBin finds Debian's PostgreSQL server programs.
func postgresBin() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	if len(dirs) == 0 {
		return "", errors.New("PostgreSQL not found: install Debian's postgresql (make temporal-server does)")
	}
	return dirs[len(dirs)-1], nil
}

// startPostgres makes a database cluster in dir and starts it on a free loopback
// port, with user temporal. PostgreSQL refuses to run as root: as root, it runs as
// the postgres user Debian's package creates.
func (c *Cluster) startPostgres(ctx context.Context, dir, bin string) (string, error) {
	data, sock := filepath.Join(dir, "pgdata"), filepath.Join(dir, "pgsock")
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("PostgreSQL will not run as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		for _, d := range []string{dir, data, sock} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return "", err
			}
			if err := os.Chown(d, uid, gid); err != nil {
				return "", err
			}
		}
		// The test's temp dirs above dir must be traversable by that user.
		for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
			if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
				_ = os.Chmod(p, st.Mode().Perm()|0o011)
			}
		}
	} else if err := os.MkdirAll(sock, 0o700); err != nil {
		return "", err
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "temporal", "--auth=trust", "--encoding=UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %w\n%s", err, out)
	}
	addr, err := stack.FreePort()
	if err != nil {
		return "", err
	}
	_, port, _ := strings.Cut(addr, ":")
	p, err := c.procs.StartAs(cred, "postgres", filepath.Join(bin, "postgres"), []string{"-D", data, "-p", port, "-k", sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off"})
	if err != nil {
		return "", err
	}
	if err := stack.WaitPort(ctx, p, addr); err != nil {
		return "", err
	}
	return addr, nil
}

// startServer writes the server's configuration (every service in one process, on
// free loopback ports) and starts it, then registers the default namespace.
func (c *Cluster) startServer(ctx context.Context, dir, bin, pgAddr string) error {
	ports := map[string]string{}
	for _, name := range []string{"frontend", "frontendHTTP", "frontendMembership", "history", "historyMembership",
		"matching", "matchingMembership", "worker", "workerMembership"} {
		port, err := lowPort()
		if err != nil {
			return err
		}
		ports[name] = strconv.Itoa(port)
	}
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o755); err != nil {
		return err
	}
	dynamic := filepath.Join(dir, "config", "dynamic.yaml")
	// Search attributes are visible at once (as on the dev server), and the SDK's
	// version check does not call home.
	if err := os.WriteFile(dynamic, []byte(`system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
frontend.enableServerVersionCheck:
  - value: false
`), 0o644); err != nil {
		return err
	}
	cfg := strings.NewReplacer(
		"PGADDR", pgAddr, "DYNAMIC", dynamic,
		"FRONTEND_GRPC", ports["frontend"], "FRONTEND_HTTP", ports["frontendHTTP"], "FRONTEND_MEMBERSHIP", ports["frontendMembership"],
		"HISTORY_GRPC", ports["history"], "HISTORY_MEMBERSHIP", ports["historyMembership"],
		"MATCHING_GRPC", ports["matching"], "MATCHING_MEMBERSHIP", ports["matchingMembership"],
		"WORKER_GRPC", ports["worker"], "WORKER_MEMBERSHIP", ports["workerMembership"],
	).Replace(serverConfig)
	if err := os.WriteFile(filepath.Join(dir, "config", "development.yaml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := c.procs.Start("temporal-server", bin, []string{"--root", dir, "--config", "config", "--env", "development", "--allow-no-auth", "start"})
	if err != nil {
		return err
	}
	c.HostPort = "127.0.0.1:" + ports["frontend"]
	if err := stack.WaitPort(ctx, p, c.HostPort); err != nil {
		return err
	}
	// The frontend listens before the cluster is ready: register the namespace
	// until the server accepts it.
	for {
		err := c.registerNamespace(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("register the default namespace: %w (last: %v)\n%s", ctx.Err(), err, p.Tail())
		case <-p.Exited():
			return fmt.Errorf("temporal-server exited (%v); its log %s ends:\n%s", p.Err(), p.Log, p.Tail())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// lowPort is a loopback port free now, below 32768: the server keeps membership
// ports in a smallint column, and the kernel's free ports are above it.
func lowPort() (int, error) {
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free loopback port between 20000 and 32000")
}

func (c *Cluster) registerNamespace(ctx context.Context) error {
	nc, err := client.NewNamespaceClient(client.Options{HostPort: c.HostPort, Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		return err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = nc.Register(rctx, &workflowservice.RegisterNamespaceRequest{Namespace: client.DefaultNamespace,
		WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour)})
	var exists *serviceerror.NamespaceAlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return err
	}
	// The namespace reaches every service's cache within seconds: wait until the
	// frontend serves it.
	for {
		if _, err := nc.Describe(rctx, client.DefaultNamespace); err == nil {
			return nil
		}
		select {
		case <-rctx.Done():
			return rctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops the server, then PostgreSQL.
func (c *Cluster) Stop() { c.procs.Stop() }

// PIDs are the cluster's processes, by name (postgres, temporal-server): a benchmark
// measures their CPU and memory.
func (c *Cluster) PIDs() map[string]int { return c.procs.PIDs() }

const serverConfig = `log:
  stdout: true
  level: warn
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql:
        pluginName: "postgres12"
        databaseName: "temporal"
        connectAddr: "PGADDR"
        connectProtocol: "tcp"
        user: "temporal"
        maxConns: 40
        maxIdleConns: 40
        maxConnLifetime: "1h"
    postgres-visibility:
      sql:
        pluginName: "postgres12"
        databaseName: "temporal_visibility"
        connectAddr: "PGADDR"
        connectProtocol: "tcp"
        user: "temporal"
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: "1h"
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "127.0.0.1"
services:
  frontend:
    rpc:
      grpcPort: FRONTEND_GRPC
      membershipPort: FRONTEND_MEMBERSHIP
      bindOnLocalHost: true
      httpPort: FRONTEND_HTTP
  matching:
    rpc:
      grpcPort: MATCHING_GRPC
      membershipPort: MATCHING_MEMBERSHIP
      bindOnLocalHost: true
  history:
    rpc:
      grpcPort: HISTORY_GRPC
      membershipPort: HISTORY_MEMBERSHIP
      bindOnLocalHost: true
  worker:
    rpc:
      grpcPort: WORKER_GRPC
      membershipPort: WORKER_MEMBERSHIP
      bindOnLocalHost: true
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: "active"
  currentClusterName: "active"
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: "frontend"
      rpcAddress: "127.0.0.1:FRONTEND_GRPC"
dcRedirectionPolicy:
  policy: "noop"
dynamicConfigClient:
  filepath: "DYNAMIC"
  pollInterval: "10s"
`
