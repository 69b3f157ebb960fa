package registry

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"modernc.org/sqlite" // registers the pure-Go "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// busyTimeout is how long a statement waits for another process's write lock
// before failing. The worker and the CLI share one file; their transactions last
// milliseconds, so 5s only runs out when something is badly stuck.
const busyTimeout = 5 * time.Second

// schemaVersion is stored in PRAGMA user_version; bump it with a migration.
const schemaVersion = 1

var schema = []string{
	`CREATE TABLE IF NOT EXISTS models (
		name       TEXT PRIMARY KEY,
		created_at TEXT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS versions (
		model      TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
		version    TEXT NOT NULL,
		endpoint   TEXT NOT NULL DEFAULT '',
		metadata   TEXT NOT NULL DEFAULT '{}', -- JSON object
		created_at TEXT NOT NULL,              -- RFC 3339, UTC
		PRIMARY KEY (model, version)
	)`,
	`CREATE TABLE IF NOT EXISTS aliases (
		model   TEXT NOT NULL,
		alias   TEXT NOT NULL,
		version TEXT NOT NULL,
		PRIMARY KEY (model, alias),
		FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE
	)`,
	`CREATE TABLE IF NOT EXISTS version_tags (
		model   TEXT NOT NULL,
		version TEXT NOT NULL,
		tag     TEXT NOT NULL,
		value   TEXT NOT NULL,
		PRIMARY KEY (model, version, tag),
		FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE
	)`,
	// Events deliberately have no foreign key: the audit log must accept a
	// decision even about a model that was never registered (e.g. a refused release).
	`CREATE TABLE IF NOT EXISTS events (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		event_key  TEXT NOT NULL UNIQUE,
		model      TEXT NOT NULL,
		version    TEXT NOT NULL DEFAULT '',
		release_id TEXT NOT NULL DEFAULT '',
		kind       TEXT NOT NULL,
		actor      TEXT NOT NULL DEFAULT '',
		message    TEXT NOT NULL DEFAULT '',
		evidence   TEXT NOT NULL DEFAULT '{}', -- JSON object
		at         TEXT NOT NULL               -- RFC 3339, UTC
	)`,
	`CREATE INDEX IF NOT EXISTS events_by_model ON events (model, id)`,
}

// SQLite is the local Registry: one SQLite file that the worker and the CLI may
// open at the same time.
type SQLite struct {
	db *sql.DB
}

var _ Registry = (*SQLite)(nil)

// OpenSQLite opens (creating if needed) the registry file at path and its parent
// directory. Close it when done.
func OpenSQLite(path string) (*SQLite, error) {
	if path == "" {
		return nil, fmt.Errorf("open registry: %w: empty path", ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("open registry %s: create its directory: %w", path, err)
	}

	// Pragmas are per connection, so they go in the DSN and the driver applies
	// them to every connection it opens. busy_timeout makes a writer wait for the
	// other process's lock instead of failing with "database is locked";
	// synchronous=FULL because an audit entry must survive power loss, and the
	// registry writes rarely. _txlock=immediate takes the write lock at BEGIN:
	// a deferred transaction that reads and then writes could not wait for the
	// lock (SQLITE_BUSY without the busy handler) once another process wrote.
	// WAL is not here: it is a property of the file, set once below.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}).String()

	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	// SQLite admits one writer at a time. One connection per handle queues this
	// process's statements fairly in database/sql instead of having several
	// connections poll for the same file lock; the registry's queries are small
	// and indexed, so serialising reads costs little. Other processes are
	// handled by WAL and busy_timeout.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &SQLite{db: db}
	if err := s.prepare(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	return s, nil
}

// prepare switches the file to WAL and creates the schema. Switching a new file
// to WAL while another process opens it can fail with SQLITE_BUSY without
// SQLite calling the busy handler, so prepare retries busy errors itself, for
// up to busyTimeout. Once the file is in WAL mode (it stays so) the busy
// handler covers everything else.
func (s *SQLite) prepare() error {
	ctx, cancel := context.WithTimeout(context.Background(), busyTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	for {
		err := s.enableWAL(ctx)
		if err == nil {
			err = s.migrate(ctx)
		}
		if err == nil || !isBusy(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (another process held the registry for %s)", err, busyTimeout)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// enableWAL lets the one writer and any readers, in any process, proceed together.
func (s *SQLite) enableWAL(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
		return fmt.Errorf("enable WAL: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("enable WAL: journal mode stayed %q; keep the registry on a local filesystem", mode)
	}
	return nil
}

func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// migrate creates the schema idempotently; concurrent openers serialise on the
// immediate transaction.
func (s *SQLite) migrate(ctx context.Context) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var have int
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&have); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if have > schemaVersion {
			return fmt.Errorf("schema version %d is newer than this mlrelease understands (%d); upgrade mlrelease", have, schemaVersion)
		}
		for _, stmt := range schema {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("create schema: %w", err)
			}
		}
		if have < schemaVersion {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
				return fmt.Errorf("set schema version: %w", err)
			}
		}
		return nil
	})
}

// Close releases the file. Other handles on the same file are unaffected.
func (s *SQLite) Close() error {
	return s.db.Close()
}

// RegisterVersion adds a version, creating its model if needed. Registering an
// existing version again replaces its endpoint and metadata (CreatedAt stays the
// first registration's), upserts its tags and points its aliases at it; it never
// duplicates. A zero CreatedAt means now.
//
// Registration is local administration (make run, tests, the CLI); with MLflow,
// versions are registered by the training pipeline.
func (s *SQLite) RegisterVersion(ctx context.Context, v Version) error {
	if err := validateVersion(v.Model, v.Version); err != nil {
		return fmt.Errorf("register version: %w", err)
	}
	if err := validateTags(v.Model, v.Version, v.Tags); err != nil {
		return fmt.Errorf("register version: %w", err)
	}
	for _, a := range v.Aliases {
		if err := validateAlias(v.Model, a); err != nil {
			return fmt.Errorf("register version: %w", err)
		}
	}
	metadata, err := encodeMap(v.Metadata)
	if err != nil {
		return fmt.Errorf("register version %q of model %q: metadata: %w", v.Version, v.Model, err)
	}
	created := v.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	at := formatTime(created)

	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO models (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`,
			v.Model, at); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO versions (model, version, endpoint, metadata, created_at) VALUES (?, ?, ?, ?, ?)
			 ON CONFLICT (model, version) DO UPDATE SET endpoint = excluded.endpoint, metadata = excluded.metadata`,
			v.Model, v.Version, v.Endpoint, metadata, at); err != nil {
			return err
		}
		if err := upsertTags(ctx, tx, v.Model, v.Version, v.Tags); err != nil {
			return err
		}
		for _, a := range v.Aliases {
			if _, err := tx.ExecContext(ctx, upsertAlias, v.Model, a, v.Version); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("register version %q of model %q: %w", v.Version, v.Model, err)
	}
	return nil
}

// versionColumns reads a version with its tags and aliases in one statement, so
// the three are a consistent snapshot without a read transaction.
const versionColumns = `v.model, v.version, v.endpoint, v.metadata, v.created_at,
	(SELECT json_group_object(t.tag, t.value) FROM version_tags t WHERE t.model = v.model AND t.version = v.version),
	(SELECT json_group_array(a.alias) FROM aliases a WHERE a.model = v.model AND a.version = v.version)`

// GetVersion implements Registry.
func (s *SQLite) GetVersion(ctx context.Context, model, version string) (Version, error) {
	if err := validateVersion(model, version); err != nil {
		return Version{}, fmt.Errorf("get version: %w", err)
	}
	v, err := scanVersion(s.db.QueryRowContext(ctx,
		`SELECT `+versionColumns+` FROM versions v WHERE v.model = ? AND v.version = ?`, model, version))
	if errors.Is(err, sql.ErrNoRows) {
		return Version{}, s.notFound(ctx, model, fmt.Sprintf("version %q", version))
	}
	if err != nil {
		return Version{}, fmt.Errorf("get version %q of model %q: %w", version, model, err)
	}
	return v, nil
}

// ListVersions returns a model's versions in registration order.
func (s *SQLite) ListVersions(ctx context.Context, model string) ([]Version, error) {
	if err := validateModel(model); err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT `+versionColumns+` FROM versions v WHERE v.model = ? ORDER BY v.rowid`, model)
	if err != nil {
		return nil, fmt.Errorf("list versions of model %q: %w", model, err)
	}
	var out []Version
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("list versions of model %q: %w", model, err)
		}
		out = append(out, v)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("list versions of model %q: %w", model, err)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list versions of model %q: %w", model, err)
	}
	if len(out) == 0 {
		if ok, err := s.modelExists(ctx, model); err != nil {
			return nil, fmt.Errorf("list versions of model %q: %w", model, err)
		} else if !ok {
			return nil, fmt.Errorf("list versions: model %q: %w", model, ErrNotFound)
		}
	}
	return out, nil
}

// ResolveAlias implements Registry.
func (s *SQLite) ResolveAlias(ctx context.Context, model, alias string) (Version, error) {
	if err := validateAlias(model, alias); err != nil {
		return Version{}, fmt.Errorf("resolve alias: %w", err)
	}
	v, err := scanVersion(s.db.QueryRowContext(ctx,
		`SELECT `+versionColumns+` FROM aliases x JOIN versions v ON v.model = x.model AND v.version = x.version
		 WHERE x.model = ? AND x.alias = ?`, model, alias))
	if errors.Is(err, sql.ErrNoRows) {
		return Version{}, s.notFound(ctx, model, fmt.Sprintf("alias %q", alias))
	}
	if err != nil {
		return Version{}, fmt.Errorf("resolve alias %q of model %q: %w", alias, model, err)
	}
	return v, nil
}

// upsertAlias points an alias at a version only if that version exists; no row
// affected means it does not.
const upsertAlias = `INSERT INTO aliases (model, alias, version)
	SELECT model, ?2, version FROM versions WHERE model = ?1 AND version = ?3
	ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version`

// SetAlias implements Registry. An unknown version is ErrNotFound.
func (s *SQLite) SetAlias(ctx context.Context, model, alias, version string) error {
	if err := validateAlias(model, alias); err != nil {
		return fmt.Errorf("set alias: %w", err)
	}
	if err := validateVersion(model, version); err != nil {
		return fmt.Errorf("set alias %q: %w", alias, err)
	}
	res, err := s.db.ExecContext(ctx, upsertAlias, model, alias, version)
	if err != nil {
		return fmt.Errorf("set alias %q of model %q to version %q: %w", alias, model, version, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("set alias %q of model %q to version %q: %w", alias, model, version, err)
	} else if n == 0 {
		return fmt.Errorf("set alias %q: %w", alias, s.notFound(ctx, model, fmt.Sprintf("version %q", version)))
	}
	return nil
}

// DeleteAlias implements Registry.
func (s *SQLite) DeleteAlias(ctx context.Context, model, alias string) error {
	if err := validateAlias(model, alias); err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	if _, err := s.db.ExecContext(ctx,
		`DELETE FROM aliases WHERE model = ? AND alias = ?`, model, alias); err != nil {
		return fmt.Errorf("delete alias %q of model %q: %w", alias, model, err)
	}
	return nil
}

// SetTags implements Registry. An unknown version is ErrNotFound.
func (s *SQLite) SetTags(ctx context.Context, model, version string, tags map[string]string) error {
	if err := validateVersion(model, version); err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	if err := validateTags(model, version, tags); err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	var missing bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx,
			`SELECT 1 FROM versions WHERE model = ? AND version = ?`, model, version).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			missing = true
			return nil
		}
		if err != nil {
			return err
		}
		return upsertTags(ctx, tx, model, version, tags)
	})
	if err != nil {
		return fmt.Errorf("set tags on version %q of model %q: %w", version, model, err)
	}
	if missing {
		return fmt.Errorf("set tags: %w", s.notFound(ctx, model, fmt.Sprintf("version %q", version)))
	}
	return nil
}

func upsertTags(ctx context.Context, tx *sql.Tx, model, version string, tags map[string]string) error {
	for k, v := range tags {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO version_tags (model, version, tag, value) VALUES (?, ?, ?, ?)
			 ON CONFLICT (model, version, tag) DO UPDATE SET value = excluded.value`,
			model, version, k, v); err != nil {
			return err
		}
	}
	return nil
}

// RecordEvent implements Registry. An event whose Key is already recorded is
// ignored, whatever its content: the first record wins. An empty Key gets a
// random one (so such events are never deduplicated); a zero At means now.
func (s *SQLite) RecordEvent(ctx context.Context, e Event) error {
	if err := validateModel(e.Model); err != nil {
		return fmt.Errorf("record event: %w", err)
	}
	if e.Kind == "" {
		return fmt.Errorf("record event for model %q: %w: empty kind", e.Model, ErrInvalid)
	}
	if e.Key == "" {
		e.Key = "evt-" + rand.Text()
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	evidence, err := encodeMap(e.Evidence)
	if err != nil {
		return fmt.Errorf("record event %q for model %q: evidence: %w", e.Key, e.Model, err)
	}
	if _, err := s.db.ExecContext(ctx,
		`INSERT INTO events (event_key, model, version, release_id, kind, actor, message, evidence, at)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_key) DO NOTHING`,
		e.Key, e.Model, e.Version, e.ReleaseID, e.Kind, e.Actor, e.Message, evidence, formatTime(e.At)); err != nil {
		return fmt.Errorf("record event %q for model %q: %w", e.Key, e.Model, err)
	}
	return nil
}

// Events implements Registry: oldest At first, ties in recording order. A model
// without events (or unknown) has none; that is not an error.
func (s *SQLite) Events(ctx context.Context, model string) ([]Event, error) {
	if err := validateModel(model); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT event_key, model, version, release_id, kind, actor, message, evidence, at
		 FROM events WHERE model = ? ORDER BY id`, model)
	if err != nil {
		return nil, fmt.Errorf("events of model %q: %w", model, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var evidence, at string
		if err := rows.Scan(&e.Key, &e.Model, &e.Version, &e.ReleaseID, &e.Kind, &e.Actor, &e.Message, &evidence, &at); err != nil {
			return nil, fmt.Errorf("events of model %q: %w", model, err)
		}
		if e.Evidence, err = decodeMap(evidence); err != nil {
			return nil, fmt.Errorf("events of model %q: event %q evidence: %w", model, e.Key, err)
		}
		if e.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("events of model %q: event %q: %w", model, e.Key, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("events of model %q: %w", model, err)
	}
	// RFC 3339 strings with trimmed fractions do not sort as text, so order by
	// time here rather than in SQL.
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

// notFound builds the ErrNotFound for subject ("version \"3\"", "alias
// \"champion\"") of model, saying so when the model itself is unknown.
func (s *SQLite) notFound(ctx context.Context, model, subject string) error {
	err := fmt.Errorf("%s of model %q: %w", subject, model, ErrNotFound)
	if ok, qerr := s.modelExists(ctx, model); qerr == nil && !ok {
		err = fmt.Errorf("%w: model %q is not registered", err, model)
	}
	return err
}

func (s *SQLite) modelExists(ctx context.Context, model string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM models WHERE name = ?`, model).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// inTx runs fn in one transaction (BEGIN IMMEDIATE, see OpenSQLite). fn must use
// tx only: the handle has a single connection, which tx holds.
func (s *SQLite) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

type scanner interface{ Scan(dest ...any) error }

func scanVersion(row scanner) (Version, error) {
	var v Version
	var metadata, created, tags, aliases string
	if err := row.Scan(&v.Model, &v.Version, &v.Endpoint, &metadata, &created, &tags, &aliases); err != nil {
		return Version{}, err
	}
	var err error
	if v.Metadata, err = decodeMap(metadata); err != nil {
		return Version{}, fmt.Errorf("version %q metadata: %w", v.Version, err)
	}
	if v.Tags, err = decodeMap(tags); err != nil {
		return Version{}, fmt.Errorf("version %q tags: %w", v.Version, err)
	}
	if err := json.Unmarshal([]byte(aliases), &v.Aliases); err != nil {
		return Version{}, fmt.Errorf("version %q aliases: %w", v.Version, err)
	}
	if len(v.Aliases) == 0 {
		v.Aliases = nil
	}
	sort.Strings(v.Aliases)
	if v.CreatedAt, err = parseTime(created); err != nil {
		return Version{}, fmt.Errorf("version %q: %w", v.Version, err)
	}
	return v, nil
}

func encodeMap(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// decodeMap returns nil for an empty object, so a Version reads the same before
// and after a JSON round trip through Temporal history (omitempty).
func decodeMap(s string) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad timestamp %q: %w", s, err)
	}
	return t.UTC(), nil
}
