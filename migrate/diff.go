package migrate

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	atlas "ariga.io/atlas/sql/migrate"
	atlasschema "ariga.io/atlas/sql/schema"
	_ "modernc.org/sqlite" // "sqlite" driver for the SQLite dev database
)

// ErrStale is returned by a Diff check when schema.sql and the migrations differ.
var ErrStale = errors.New("migrations are stale: run llmproxy migrate diff <name>")

// DiffOptions configures Diff.
type DiffOptions struct {
	Config   string    // path of atlas.hcl
	Name     string    // name of the new migration, e.g. add_tokens_label; unused by Check
	Dialects []Dialect // envs to plan; empty means every env of Config
	Check    bool      // report ErrStale instead of writing files
}

// DiffResult is what Diff did for one dialect.
type DiffResult struct {
	Dialect Dialect
	File    string // path of the new migration file; "" when nothing changed
}

var migrationName = regexp.MustCompile(`^[a-z0-9_]+$`)

// Diff plans, for each env of the config, the migration from the state of
// its migration directory to its schema.sql, and writes it with the updated
// atlas.sum. Every dialect's new file gets the same version.
func Diff(ctx context.Context, opts DiffOptions) ([]DiffResult, error) {
	if !opts.Check && !migrationName.MatchString(opts.Name) {
		return nil, fmt.Errorf("migration name %q: want lower-case letters, digits and underscores, e.g. add_tokens_label", opts.Name)
	}
	envs, err := selectEnvs(opts.Config, opts.Dialects)
	if err != nil {
		return nil, err
	}
	version, err := nextVersion(envs)
	if err != nil {
		return nil, err
	}
	// Plan every dialect before writing any, so a failure writes nothing.
	type planned struct {
		env     Env
		planner *atlas.Planner
		plan    *atlas.Plan
	}
	var (
		plans []planned
		stale []string
	)
	for _, env := range envs {
		planner, plan, err := planEnv(ctx, env, opts.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", env.Dialect, err)
		}
		if plan != nil {
			stale = append(stale, string(env.Dialect))
		}
		plans = append(plans, planned{env, planner, plan})
	}
	if opts.Check && len(stale) > 0 {
		return nil, fmt.Errorf("%s: %w", strings.Join(stale, ", "), ErrStale)
	}
	results := make([]DiffResult, 0, len(plans))
	for _, p := range plans {
		res := DiffResult{Dialect: p.env.Dialect}
		if p.plan != nil && !opts.Check {
			p.plan.Version = version
			if err := p.planner.WritePlan(p.plan); err != nil {
				return results, fmt.Errorf("%s: %w", p.env.Dialect, err)
			}
			res.File = filepath.Join(p.env.Dir, p.plan.Version+"_"+p.plan.Name+".sql")
		}
		results = append(results, res)
	}
	return results, nil
}

// nextVersion is now, or one second after the newest file of the envs'
// directories if that is later, so versions stay unique and ordered even
// when two migrations are planned within a second.
func nextVersion(envs []Env) (string, error) {
	const layout = "20060102150405" // atlas's version format
	next := time.Now().UTC().Truncate(time.Second)
	for _, env := range envs {
		dir, err := atlas.NewLocalDir(env.Dir)
		if err != nil {
			return "", err
		}
		files, err := dir.Files()
		if err != nil {
			return "", err
		}
		if len(files) == 0 {
			continue
		}
		last, err := time.Parse(layout, files[len(files)-1].Version())
		if err != nil {
			return "", fmt.Errorf("%s: version of %s: %w", env.Dir, files[len(files)-1].Name(), err)
		}
		if !last.Before(next) {
			next = last.Add(time.Second)
		}
	}
	return next.Format(layout), nil
}

// planEnv plans the migration the env's directory lacks; the plan is nil
// when the directory is current. The planner writes the plan and atlas.sum.
func planEnv(ctx context.Context, env Env, name string) (*atlas.Planner, *atlas.Plan, error) {
	dir, err := atlas.NewLocalDir(env.Dir)
	if err != nil {
		return nil, nil, err
	}
	if err := atlas.Validate(dir); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", env.Dir, describeChecksumError(err))
	}
	src, err := os.ReadFile(env.Src)
	if err != nil {
		return nil, nil, err
	}
	dev, closeDev, err := openDev(ctx, env)
	if err != nil {
		return nil, nil, fmt.Errorf("dev database: %w", err)
	}
	defer closeDev()
	drv, err := env.Dialect.driver(dev)
	if err != nil {
		return nil, nil, err
	}
	desired, err := loadState(ctx, drv, env.Src, src)
	if err != nil {
		return nil, nil, err
	}
	planner := newPlanner(drv, dir, env.Dialect)
	plan, err := planner.Plan(ctx, name, atlas.Realm(desired))
	if errors.Is(err, atlas.ErrNoPlan) {
		return planner, nil, nil
	}
	return planner, plan, err
}

func newPlanner(drv atlas.Driver, dir atlas.Dir, d Dialect) *atlas.Planner {
	opts := []atlas.PlannerOption{atlas.PlanWithChecksum(true), atlas.PlanWithIndent("  ")}
	if d == Postgres {
		// Unqualified names follow the search_path of the database they run on.
		opts = append(opts, atlas.PlanWithSchemaQualifier(""))
	}
	return atlas.NewPlanner(drv, dir, opts...)
}

// loadState runs the statements of a schema file on the clean dev database
// and returns the resulting schema, leaving the database clean again.
func loadState(ctx context.Context, drv atlas.Driver, name string, src []byte) (_ *atlasschema.Realm, err error) {
	restore, err := drv.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := restore(ctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("clean dev database: %w", rerr))
		}
	}()
	stmts, err := atlas.FileStmtDecls(drv, atlas.NewLocalFile(filepath.Base(name), src))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, s := range stmts {
		if _, err := drv.ExecContext(ctx, s.Text); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, lineAt(src, s.Pos), err)
		}
	}
	return drv.InspectRealm(ctx, nil)
}

// openDev opens an empty database to plan on: a private in-memory SQLite
// database, or a scratch database created on the Postgres dev server and
// dropped by the returned func.
func openDev(ctx context.Context, env Env) (*sql.DB, func(), error) {
	u, err := url.Parse(env.DevURL)
	if err != nil {
		return nil, nil, fmt.Errorf("dev URL: malformed")
	}
	switch env.Dialect {
	case SQLite:
		if u.Scheme != "sqlite" {
			return nil, nil, fmt.Errorf("dev URL scheme %q: want sqlite://", u.Scheme)
		}
		db, err := sql.Open("sqlite", ":memory:")
		if err != nil {
			return nil, nil, err
		}
		// Every connection to :memory: is a separate database.
		db.SetMaxOpenConns(1)
		return db, func() { db.Close() }, nil
	default:
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return nil, nil, fmt.Errorf("dev URL scheme %q: want postgres:// (a server where a scratch database can be created)", u.Scheme)
		}
		return scratchPostgres(ctx, u)
	}
}

func scratchPostgres(ctx context.Context, server *url.URL) (*sql.DB, func(), error) {
	admin, err := OpenPostgres(server.String())
	if err != nil {
		return nil, nil, err
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "llmproxy_dev_" + hex.EncodeToString(b)
	// The name is lower-case letters, digits and underscores: quoting needs no escaping.
	ident := `"` + name + `"`
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+ident); err != nil {
		admin.Close()
		return nil, nil, err
	}
	scratchURL := *server
	scratchURL.Path = "/" + name
	db, err := OpenPostgres(scratchURL.String())
	if err != nil {
		admin.Close()
		return nil, nil, err
	}
	return db, func() {
		db.Close()
		admin.ExecContext(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
		admin.Close()
	}, nil
}
