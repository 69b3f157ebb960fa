package registry_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/mlrelease/mlrelease/internal/registry"
)

// A release promotes version 2 of a model: the champion alias moves, the outcome
// is tagged on the version and the decision lands in the audit log once, however
// often the activity is retried.
func Example() {
	dir, err := os.MkdirTemp("", "registry-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	reg, err := registry.OpenSQLite(filepath.Join(dir, "registry.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()

	for _, v := range []registry.Version{
		{Model: "fraud", Version: "1", Endpoint: "http://fraud-v1:8000", Aliases: []string{registry.AliasChampion}},
		{Model: "fraud", Version: "2", Endpoint: "http://fraud-v2:8000"},
	} {
		if err := reg.RegisterVersion(ctx, v); err != nil {
			log.Fatal(err)
		}
	}

	var r registry.Registry = reg // what the activities see
	champion, _ := r.ResolveAlias(ctx, "fraud", registry.AliasChampion)
	fmt.Println("champion before:", champion.Version, champion.Endpoint)

	_ = r.SetAlias(ctx, "fraud", registry.AliasChampion, "2")
	_ = r.SetTags(ctx, "fraud", "2", map[string]string{"release.outcome": "promoted"})
	promoted := registry.Event{Key: "rel-1/promote", Model: "fraud", Version: "2", Kind: "promoted", Actor: "alice"}
	_ = r.RecordEvent(ctx, promoted)
	_ = r.RecordEvent(ctx, promoted) // a retried activity

	champion, _ = r.ResolveAlias(ctx, "fraud", registry.AliasChampion)
	fmt.Println("champion after:", champion.Version, champion.Tags["release.outcome"])
	events, _ := r.Events(ctx, "fraud")
	fmt.Println("events:", len(events), events[0].Kind, "by", events[0].Actor)

	_, err = r.GetVersion(ctx, "fraud", "3")
	fmt.Println(errors.Is(err, registry.ErrNotFound), err)
	// Output:
	// champion before: 1 http://fraud-v1:8000
	// champion after: 2 promoted
	// events: 1 promoted by alice
	// true version "3" of model "fraud": not found
}
