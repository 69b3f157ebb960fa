//go:build tools

// Package temporalserver pins the Temporal server the cluster tests and the scale
// benchmark run on PostgreSQL: the version the Temporal CLI's dev server embeds.
// It is its own module so that the server's dependencies never enter mlrelease's:
// `make temporal-server` builds the server and its SQL schema tool once into bin/.
package temporalserver

import (
	_ "go.temporal.io/server/cmd/server"
	_ "go.temporal.io/server/cmd/tools/sql"
)
