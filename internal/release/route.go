package release

import (
	"context"
	"errors"
	"fmt"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// EnsureRoute makes the gateway serve a model it has no route for: all traffic to
// the registry's champion. A model that has routes is left as it is, whoever set
// them (a running release, a promotion), so a deployment that runs it at every start
// never moves traffic back. It returns the routes served and whether it set them.
func EnsureRoute(ctx context.Context, reg registry.Registry, d deploy.Deployer, model string) (deploy.Applied, bool, error) {
	cur, err := d.Current(ctx, model)
	if err == nil {
		return cur, false, nil
	}
	if !errors.Is(err, deploy.ErrNotFound) {
		return deploy.Applied{}, false, fmt.Errorf("read the gateway's routes for %s: %w", model, err)
	}
	champ, err := reg.ResolveAlias(ctx, model, registry.AliasChampion)
	if err != nil {
		return deploy.Applied{}, false, fmt.Errorf("model %s has no route and no %s to route to: %w", model, registry.AliasChampion, err)
	}
	if champ.Endpoint == "" {
		return deploy.Applied{}, false, fmt.Errorf("champion %s of model %s has no endpoint in the registry", champ.Version, model)
	}
	a, err := d.Apply(ctx, deploy.Traffic{Model: model, Champion: deploy.Backend{Version: champ.Version, URL: champ.Endpoint}})
	if err != nil {
		return deploy.Applied{}, false, err
	}
	return a, true, nil
}
