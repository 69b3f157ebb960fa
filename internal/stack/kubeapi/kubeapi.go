// Package kubeapi runs a real Kubernetes API server for tests: Debian's etcd and a
// kube-apiserver built from k8s.io/kubernetes (`make kube-apiserver`, once, into bin/),
// with a token file, RBAC and generated service-account keys. No controllers run: a
// test that needs an object's status writes it as the controller would.
package kubeapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/mlrelease/mlrelease/internal/stack"
)

// Users the server knows, by bearer token.
const (
	// Admin is in system:masters: it installs CRDs and plays the controllers.
	Admin = "admin"
	// Deployer has only the rights an RBAC manifest grants it (the mlrelease worker's).
	Deployer = "mlrelease-deployer"
)

// Server is a running API server and its etcd.
type Server struct {
	// URL is the API server's https address.
	URL string
	// CAFile is the serving certificate, self-signed by the server.
	CAFile string
	tokens map[string]string
	stack  *stack.Stack
}

// Start starts etcd and kube-apiserver on free loopback ports under dir. A missing
// binary is an error that says how to get it, never a skip.
func Start(ctx context.Context, dir string) (*Server, error) {
	root, err := stack.Root()
	if err != nil {
		return nil, err
	}
	apiserver, err := stack.Find(root, "kube-apiserver")
	if err != nil {
		return nil, fmt.Errorf("%w: run `make kube-apiserver`", err)
	}
	etcd, err := stack.Find(root, "etcd")
	if err != nil {
		return nil, fmt.Errorf("%w: install Debian's etcd-server (`make kube-apiserver` does)", err)
	}
	s := &Server{stack: &stack.Stack{LogDir: filepath.Join(dir, "logs")}, tokens: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()

	client, err := stack.FreePort()
	if err != nil {
		return nil, err
	}
	peer, err := stack.FreePort()
	if err != nil {
		return nil, err
	}
	e, err := s.stack.Start("etcd", etcd, []string{"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://" + client, "--advertise-client-urls", "http://" + client,
		"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
		"--initial-cluster", "default=http://" + peer, "--log-level", "warn"})
	if err != nil {
		return nil, err
	}
	if err := stack.WaitPort(ctx, e, client); err != nil {
		return nil, err
	}

	if err := s.writeCredentials(dir); err != nil {
		return nil, err
	}
	secure, err := stack.FreePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(secure, ":")
	certs := filepath.Join(dir, "certs")
	a, err := s.stack.Start("kube-apiserver", apiserver, []string{
		"--etcd-servers", "http://" + client,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", port,
		"--cert-dir", certs,
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://127.0.0.1:" + port,
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--disable-admission-plugins", "ServiceAccount",
		"--allow-privileged",
	})
	if err != nil {
		return nil, err
	}
	s.URL, s.CAFile = "https://"+secure, filepath.Join(certs, "apiserver.crt")
	if err := s.waitReady(ctx, a); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// writeCredentials writes the token file and the service-account signing keys.
func (s *Server) writeCredentials(dir string) error {
	var lines []string
	for i, u := range []struct{ name, groups string }{{Admin, "system:masters"}, {Deployer, "mlrelease"}} {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		s.tokens[u.name] = hex.EncodeToString(b)
		lines = append(lines, fmt.Sprintf("%s,%s,%d,%q", s.tokens[u.name], u.name, 1000+i, u.groups))
	}
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

// waitReady polls /readyz until the server and its post-start hooks (RBAC bootstrap
// among them) are ready, the process exits, or ctx ends.
func (s *Server) waitReady(ctx context.Context, p *stack.Proc) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		// The certificate appears only once the server started; until then, wait.
		if _, err := os.Stat(s.CAFile); err == nil {
			rc := s.Config(Admin)
			if hc, err := rest.HTTPClientFor(rc); err == nil {
				if resp, err := hc.Get(s.URL + "/readyz"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						return nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready at %s: %w\n%s", s.URL, ctx.Err(), p.Tail())
		case <-p.Exited():
			return fmt.Errorf("kube-apiserver exited before it was ready (%v); its log %s ends:\n%s", p.Err(), p.Log, p.Tail())
		case <-tick.C:
		}
	}
}

// Config is a client configuration for one of the server's users.
func (s *Server) Config(user string) *rest.Config {
	return &rest.Config{Host: s.URL, BearerToken: s.tokens[user],
		TLSClientConfig: rest.TLSClientConfig{CAFile: s.CAFile}, QPS: 100, Burst: 200}
}

// Kubeconfig writes a kubeconfig file for user, as a worker would be given one.
func (s *Server) Kubeconfig(path, user string) error {
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "test",
		"clusters":    []any{map[string]any{"name": "test", "cluster": map[string]any{"server": s.URL, "certificate-authority": s.CAFile}}},
		"users":       []any{map[string]any{"name": user, "user": map[string]any{"token": s.tokens[user]}}},
		"contexts":    []any{map[string]any{"name": "test", "context": map[string]any{"cluster": "test", "user": user}}},
		"preferences": map[string]any{},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// Stop stops the API server, then etcd.
func (s *Server) Stop() { s.stack.Stop() }

// The data planes' CRDs come from their projects' own modules, at these versions.
const (
	GatewayAPIModule = "sigs.k8s.io/gateway-api@v1.4.1"
	KServeModule     = "github.com/kserve/kserve@v0.15.2"
)

// InstallDataPlaneCRDs installs the CRDs the Kubernetes deployers drive: Gateway
// API's HTTPRoute (standard channel) and KServe's InferenceService (full schema).
func (s *Server) InstallDataPlaneCRDs(ctx context.Context) error {
	gw, err := stack.ModuleDir(ctx, GatewayAPIModule)
	if err != nil {
		return err
	}
	ks, err := stack.ModuleDir(ctx, KServeModule)
	if err != nil {
		return err
	}
	return s.InstallCRDs(ctx,
		filepath.Join(gw, "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"),
		filepath.Join(ks, "config/crd/full/serving.kserve.io_inferenceservices.yaml"))
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates the CustomResourceDefinitions in the YAML files (as the admin)
// and waits until each is established.
func (s *Server) InstallCRDs(ctx context.Context, files ...string) error {
	dc, err := dynamic.NewForConfig(s.Config(Admin))
	if err != nil {
		return err
	}
	for _, f := range files {
		objs, err := ReadObjects(f)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if _, err := dc.Resource(crdResource).Create(ctx, o, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("install CRD %s from %s: %w", o.GetName(), f, err)
			}
			if err := waitEstablished(ctx, dc, o.GetName()); err != nil {
				return err
			}
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, dc dynamic.Interface, name string) error {
	for {
		crd, err := dc.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not established: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadObjects decodes every object of a multi-document YAML (or JSON) file.
func ReadObjects(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 1<<20)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}
