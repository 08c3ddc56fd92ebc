// Package pgstore is the PostgreSQL backend of service.Store, built on pgx
// and the sqlc package gen/pgdb. Importing it registers the "postgres" driver.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/llmproxy/llmproxy/gen/pgdb"
	"github.com/llmproxy/llmproxy/migrate"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/internal/convert"
)

func init() {
	service.Register(service.DriverPostgres, func(ctx context.Context, cfg service.Config) (service.Store, error) {
		return Open(ctx, cfg)
	})
}

var _ service.Store = (*Store)(nil)

// Defaults for the pool settings a Config leaves at zero (the configuration contract's).
const (
	defaultPoolSize        = 25
	defaultMaxIdleConns    = 5
	defaultConnMaxLifetime = 5 * time.Minute

	// Idle connections beyond the warm ones are closed after this long.
	maxConnIdleTime = time.Minute
	// Per connection attempt, unless the URL sets connect_timeout.
	connectTimeout = 5 * time.Second
	// Bounds the whole first connection at Open, which may try several
	// addresses and TLS then plain text, so a bad URL fails within seconds.
	openPingTimeout = 8 * time.Second
)

// Store implements service.Store. A Store made by InTx runs every query in
// its transaction; the one made by Open runs them on the pool.
type Store struct {
	pool *pgxpool.Pool
	q    *pgdb.Queries
	db   pgdb.DBTX // pool, or the transaction when inTx
	inTx bool
	// Inside a transaction: the tokens whose admission leases its commit
	// waits out, as it restricts their admission.
	leases *service.LeaseScope
}

// Open connects to cfg.DatabaseURL, checks the server answers and, unless
// cfg.SkipMigrate, applies pending migrations. Its errors never contain the
// password.
func Open(ctx context.Context, cfg service.Config) (*Store, error) {
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		// The parser's message quotes the URL and redacts passwords only on a
		// best-effort basis, so it is not repeated here.
		return nil, errors.New("postgres: DATABASE_URL is not a valid postgres:// URL or key=value connection string")
	}
	applyPoolSettings(poolCfg, cfg)

	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, newConnectError(ctx, poolCfg.ConnConfig, err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, openPingTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, newConnectError(ctx, poolCfg.ConnConfig, err)
	}

	if !cfg.SkipMigrate {
		if err := applyMigrations(ctx, poolCfg.ConnConfig); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return &Store{pool: pool, q: pgdb.New(), db: pool}, nil
}

func applyPoolSettings(poolCfg *pgxpool.Config, cfg service.Config) {
	maxConns := orDefault(cfg.PoolSize, defaultPoolSize)
	poolCfg.MaxConns = int32(maxConns)
	// MaxIdleConns connections are kept open and idle for bursts. MinConns as
	// well keeps the idle-time check from closing (and the pool reopening)
	// those same connections every minute; it closes only the ones beyond.
	warm := int32(min(orDefault(cfg.MaxIdleConns, defaultMaxIdleConns), maxConns))
	poolCfg.MinIdleConns = warm
	poolCfg.MinConns = warm
	poolCfg.MaxConnIdleTime = maxConnIdleTime
	poolCfg.MaxConnLifetime = orDefault(cfg.ConnMaxLifetime, defaultConnMaxLifetime)
	if poolCfg.ConnConfig.ConnectTimeout == 0 {
		poolCfg.ConnConfig.ConnectTimeout = connectTimeout
	}
}

// orDefault returns v, or def when v is not positive (not configured).
func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// applyMigrations runs the versioned migrations over a database/sql handle
// of its own, which the migrate package needs, closed once they are applied.
func applyMigrations(ctx context.Context, connCfg *pgx.ConnConfig) error {
	db := stdlib.OpenDB(*connCfg)
	defer db.Close()
	if _, err := migrate.Apply(ctx, db, migrate.Postgres); err != nil {
		return fmt.Errorf("postgres: migrate: %w", mapError(err))
	}
	return nil
}

// InTx runs fn in one transaction; a Store already in one joins it.
func (s *Store) InTx(ctx context.Context, fn func(tx service.Store) error) error {
	return s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error { return fn(tx) })
}

// withTx commits when fn returns nil and rolls back otherwise, also when fn
// panics. The rollback ignores ctx's cancellation so a cancelled request
// never leaves a transaction open on a pooled connection.
func (s *Store) withTx(ctx context.Context, opts pgx.TxOptions, fn func(tx *Store) error) error {
	if s.inTx {
		return fn(s)
	}
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return s.fail(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	leases := &service.LeaseScope{}
	if err := fn(&Store{pool: s.pool, q: s.q, db: tx, inTx: true, leases: leases}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return s.fail(err)
	}
	service.AwaitLeases(ctx, leases, leaseReader{s})
	return nil
}

// leaseReader reads leases after the commit. An admission that read the
// token as it was before a change of the token's row waited for that
// change's row lock and then saw the change, or the change waited for it:
// its lease is committed by then. An admission that read the project as it
// was before a change of the project row may still be running, so the
// project's leases are read after TokenLockForLeases has waited for it.
type leaseReader struct{ s *Store }

func (r leaseReader) TokenLeaseRemaining(ctx context.Context, id int64) (time.Duration, error) {
	us, err := r.s.q.TokenLeaseRemaining(ctx, r.s.db, id)
	return time.Duration(us) * time.Microsecond, r.s.fail(err)
}

func (r leaseReader) ProjectLeaseRemaining(ctx context.Context, id int64) (time.Duration, error) {
	var us int64
	err := r.s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error {
		if err := tx.q.TokenLockForLeases(ctx, tx.db); err != nil {
			return tx.fail(err)
		}
		var err error
		us, err = tx.q.TokenLeaseRemainingForProject(ctx, tx.db, id)
		return tx.fail(err)
	})
	return time.Duration(us) * time.Microsecond, err
}

// fail maps err like mapError and, when it shows the server went away,
// closes the pool's other connections too: they are as dead as this one,
// and the pool would otherwise hand each of them to one more request.
func (s *Store) fail(err error) error {
	err = mapError(err)
	if errors.Is(err, service.ErrUnavailable) {
		s.pool.Reset()
	}
	return err
}

// Ping reports whether the server answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.fail(s.pool.Ping(ctx))
}

// Close closes the pool. A transaction's Store does not own the pool.
func (s *Store) Close() error {
	if s.inTx {
		return errors.New("pgstore: Close called on the Store of a transaction")
	}
	s.pool.Close()
	return nil
}

func (s *Store) ProjectCreate(ctx context.Context, p *service.ProjectCreateParams) (*service.Project, error) {
	row, err := s.q.ProjectCreate(ctx, s.db, &pgdb.ProjectCreateParams{
		Name:             p.Name,
		ApiKeyCiphertext: p.APIKeyCiphertext,
		ApiKeyHint:       p.APIKeyHint,
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return projectFromRow(row), nil
}

func (s *Store) ProjectGetByID(ctx context.Context, id int64) (*service.Project, error) {
	row, err := s.q.ProjectGetByID(ctx, s.db, id)
	if err != nil {
		return nil, s.fail(err)
	}
	return projectFromRow(row), nil
}

func (s *Store) ProjectList(ctx context.Context, p *service.ProjectListParams) ([]*service.Project, error) {
	rows, err := s.q.ProjectList(ctx, s.db, &pgdb.ProjectListParams{
		AfterID: p.AfterID,
		MaxRows: service.PageLimit(p.Limit),
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, projectFromRow), nil
}

func (s *Store) ProjectUpdate(ctx context.Context, p *service.ProjectUpdateParams) (*service.Project, error) {
	var row *pgdb.Project
	err := s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error {
		if p.RestrictsAdmission() {
			tx.leases.AddProject(p.ID)
		}
		var err error
		if p.IsActive != nil {
			row, err = tx.q.ProjectSetActive(ctx, tx.db, &pgdb.ProjectSetActiveParams{IsActive: *p.IsActive, ID: p.ID})
			if err != nil {
				return tx.fail(err)
			}
		}
		if p.Name != nil || p.APIKeyCiphertext != nil || p.APIKeyHint != nil {
			row, err = tx.q.ProjectUpdate(ctx, tx.db, &pgdb.ProjectUpdateParams{
				Name:             p.Name,
				ApiKeyCiphertext: p.APIKeyCiphertext,
				ApiKeyHint:       p.APIKeyHint,
				ID:               p.ID,
			})
			if err != nil {
				return tx.fail(err)
			}
		}
		if row == nil { // nothing to change: the current row
			row, err = tx.q.ProjectGetByID(ctx, tx.db, p.ID)
		}
		return tx.fail(err)
	})
	if err != nil {
		return nil, err
	}
	return projectFromRow(row), nil
}

func (s *Store) TokenCreate(ctx context.Context, p *service.TokenCreateParams) (*service.Token, error) {
	params := pgdb.TokenCreateParams(*p)
	params.ExpiresAt = params.ExpiresAt.UTC()
	row, err := s.q.TokenCreate(ctx, s.db, &params)
	if errors.Is(err, pgx.ErrNoRows) {
		// Refused: the project is missing (ErrNotFound), or it exists and so
		// was inactive when the insert looked.
		if _, err := s.ProjectGetByID(ctx, p.ProjectID); err != nil {
			return nil, err
		}
		return nil, service.ErrProjectInactive
	}
	if err != nil {
		return nil, s.fail(err)
	}
	return tokenFromRow(row), nil
}

func (s *Store) TokenGetByID(ctx context.Context, id int64) (*service.Token, error) {
	row, err := s.q.TokenGetByID(ctx, s.db, id)
	if err != nil {
		return nil, s.fail(err)
	}
	return tokenFromRow(row), nil
}

func (s *Store) TokenGetByHash(ctx context.Context, secretHash []byte) (*service.Token, error) {
	row, err := s.q.TokenGetByHash(ctx, s.db, secretHash)
	if err != nil {
		return nil, s.fail(err)
	}
	return tokenFromRow(row), nil
}

func (s *Store) TokenAuthenticate(ctx context.Context, secretHash []byte) (*service.Token, *service.Project, error) {
	row, err := s.q.TokenAuthenticate(ctx, s.db, secretHash)
	if err != nil {
		return nil, nil, s.fail(err)
	}
	token, project := tokenFromRow(&row.Token), projectFromRow(&row.Project)
	if err := service.AuthenticationRefusal(token, project, row.Expired); err != nil {
		return nil, nil, err
	}
	return token, project, nil
}

func (s *Store) TokenList(ctx context.Context, p *service.TokenListParams) ([]*service.Token, error) {
	rows, err := s.q.TokenList(ctx, s.db, &pgdb.TokenListParams{
		ProjectID: p.ProjectID,
		AfterID:   p.AfterID,
		MaxRows:   service.PageLimit(p.Limit),
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, tokenFromRow), nil
}

// TokenAdmit counts the request with one conditional UPDATE; only when it
// refuses are the token and project read, to say why.
func (s *Store) TokenAdmit(ctx context.Context, id int64) (*service.Token, error) {
	row, err := service.AdmitOrExplain(ctx, s, 1, func() (*pgdb.Token, bool, error) {
		return matched(s.q.TokenAdmit(ctx, s.db, id))
	}, func() (*service.Token, error) { return s.TokenGetByID(ctx, id) })
	if err != nil {
		return nil, s.fail(err)
	}
	return tokenFromRow(row), nil
}

// TokenAdmitByHash is the proxy's TokenAdmit: one UPDATE ... FROM projects
// finds the token by its hash, counts n requests and returns the token with
// its project, in one round trip.
func (s *Store) TokenAdmitByHash(ctx context.Context, p *service.TokenAdmitByHashParams) (*service.Token, *service.Project, error) {
	if err := service.CheckAdmission(p); err != nil {
		return nil, nil, err
	}
	params := &pgdb.TokenAdmitByHashParams{SecretHash: p.SecretHash, N: p.N, Reserve: p.Reserve, LeaseUs: service.LeaseIn(p.Lease, time.Microsecond)}
	row, err := service.AdmitOrExplain(ctx, s, p.N+p.Reserve, func() (*pgdb.TokenAdmitByHashRow, bool, error) {
		return matched(s.q.TokenAdmitByHash(ctx, s.db, params))
	}, func() (*service.Token, error) { return s.TokenGetByHash(ctx, p.SecretHash) })
	if err != nil {
		return nil, nil, s.fail(err)
	}
	return tokenFromRow(&row.Token), projectFromRow(&row.Project), nil
}

// matched adapts a :one query's result to AdmitOrExplain: no row is a
// refusal, not an error.
func matched[T any](row T, err error) (T, bool, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return row, false, nil
	}
	return row, err == nil, err
}

func (s *Store) TokenSettleReserved(ctx context.Context, tokenID, reserved, unused int64) error {
	if err := service.CheckSettlement(reserved, unused); err != nil {
		return err
	}
	settled, err := s.q.TokenSettleReserved(ctx, s.db, &pgdb.TokenSettleReservedParams{Unused: unused, Reserved: reserved, ID: tokenID})
	if err != nil {
		return s.fail(err)
	}
	if settled == 0 {
		return service.ExplainSettlementRefusal(ctx, s, tokenID, reserved)
	}
	return nil
}

func (s *Store) TokenUpdate(ctx context.Context, p *service.TokenUpdateParams) (*service.Token, error) {
	var row *pgdb.Token
	err := s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error {
		if p.RestrictsAdmission() {
			tx.leases.AddToken(p.ID)
		}
		var err error
		if p.IsActive != nil {
			row, err = tx.q.TokenSetActive(ctx, tx.db, &pgdb.TokenSetActiveParams{IsActive: *p.IsActive, ID: p.ID})
			if err != nil {
				return tx.fail(err)
			}
		}
		if p.SetMaxRequests {
			row, err = tx.q.TokenSetMaxRequests(ctx, tx.db, &pgdb.TokenSetMaxRequestsParams{MaxRequests: p.MaxRequests, ID: p.ID})
			if err != nil {
				return tx.fail(err)
			}
		}
		if row == nil { // nothing to change: the current row
			row, err = tx.q.TokenGetByID(ctx, tx.db, p.ID)
		}
		return tx.fail(err)
	})
	if err != nil {
		return nil, err
	}
	return tokenFromRow(row), nil
}

func (s *Store) TokenRevokeAllForProject(ctx context.Context, projectID int64) (*service.RevokeResult, error) {
	var result service.RevokeResult
	err := s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error {
		if _, err := tx.q.ProjectGetByID(ctx, tx.db, projectID); err != nil {
			return tx.fail(err)
		}
		var err error
		if result.AlreadyRevokedCount, err = tx.q.TokenCountRevokedForProject(ctx, tx.db, projectID); err != nil {
			return tx.fail(err)
		}
		result.RevokedCount, err = tx.q.TokenRevokeAllForProject(ctx, tx.db, projectID)
		if result.RevokedCount > 0 {
			tx.leases.AddProject(projectID)
		}
		return tx.fail(err)
	})
	if err != nil {
		return nil, err
	}
	return &result, nil
}

// UsageInsertBatch writes the events, and adds the ones it wrote to
// usage_hourly, with one statement of parallel arrays, which is all or
// nothing and skips events whose EventID is stored already.
func (s *Store) UsageInsertBatch(ctx context.Context, events []*service.UsageEventCreateParams) (int64, error) {
	if len(events) == 0 {
		return 0, nil
	}
	params := usageInsertColumns(events)
	n, err := s.q.UsageInsertBatch(ctx, s.db, &params)
	if err != nil {
		return 0, s.fail(err)
	}
	return n, nil
}

// usageInsertColumns turns the events into the query's arrays, one per column.
func usageInsertColumns(events []*service.UsageEventCreateParams) pgdb.UsageInsertBatchParams {
	n := len(events)
	p := pgdb.UsageInsertBatchParams{
		TokenIds: make([]int64, n), ProjectIds: make([]int64, n), Methods: make([]string, n),
		Paths: make([]string, n), Models: make([]string, n), Statuses: make([]int64, n),
		PromptTokens: make([]int64, n), CompletionTokens: make([]int64, n), TotalTokens: make([]int64, n),
		LatenciesMs: make([]int64, n), CreatedAts: make([]time.Time, n), EventIds: make([][]byte, n),
	}
	for i, e := range events {
		p.TokenIds[i] = e.TokenID
		p.ProjectIds[i] = e.ProjectID
		p.Methods[i] = e.Method
		p.Paths[i] = e.Path
		p.Models[i] = e.Model
		p.Statuses[i] = e.Status
		p.PromptTokens[i] = e.PromptTokens
		p.CompletionTokens[i] = e.CompletionTokens
		p.TotalTokens[i] = e.TotalTokens
		p.LatenciesMs[i] = e.LatencyMS
		p.CreatedAts[i] = e.CreatedAt.UTC()
		p.EventIds[i] = e.EventID
	}
	return p
}

// usageReadSettings make PostgreSQL plan the rest of a transaction's
// statements for their parameters. pgx prepares each statement once per
// connection, and after five runs PostgreSQL may switch a prepared
// statement to its generic plan, one for any parameters: for the usage
// reads, whose filters are optional ($1 IS NULL OR project_id = $1), that
// is a serial scan of every row in the range plus a sort, about three
// times slower than the custom plan at a few million events (measured with
// llmproxy-bench scale). Planning each read costs far less than that.
//
// It also turns JIT compilation off for them: the raw-event parts of a
// usage read are costed by the size of usage_events, so at a few million
// events the plan crosses jit_above_cost, and compiling it took 75 ms of a
// read that runs in 17 (EXPLAIN ANALYZE at 10M events). The reads touch few
// rows, which JIT cannot speed up.
const usageReadSettings = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off"

// usageReadParams are the bounds of r for the usage reads, whose
// parameters are the same.
func usageReadParams(f *service.UsageFilter, r service.UsageReadRange) pgdb.UsageTotalsByModelParams {
	return pgdb.UsageTotalsByModelParams{
		ProjectID: f.ProjectID, TokenID: f.TokenID,
		Since: r.Since, HourSince: r.HourSince, HourUntil: r.HourUntil, Until: r.Until,
		RollupToken: r.RollupToken, RollupProjectMin: r.RollupProjectMin, RollupProjectMax: r.RollupProjectMax,
		SinceDay: r.SinceDay, UntilDay: r.UntilDay,
	}
}

// usageRead runs read in a read-only transaction with usageReadSettings.
func (s *Store) usageRead(ctx context.Context, read func(tx *Store) error) error {
	return s.withTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx *Store) error {
		if _, err := tx.db.Exec(ctx, usageReadSettings); err != nil {
			return tx.fail(err)
		}
		return tx.fail(read(tx))
	})
}

// UsageTotals reads the per-model rows in one statement, planned for its
// filter (usageReadSettings); the totals are their sum.
func (s *Store) UsageTotals(ctx context.Context, f *service.UsageFilter) (*service.UsageTotals, error) {
	params := usageReadParams(f, service.NewUsageReadRange(f))
	var byModel []*pgdb.UsageTotalsByModelRow
	err := s.usageRead(ctx, func(tx *Store) (err error) {
		byModel, err = tx.q.UsageTotalsByModel(ctx, tx.db, &params)
		return err
	})
	if err != nil {
		return nil, err
	}
	return convert.Totals(byModel), nil
}

// UsageTotalsByDay is one read of the days' totals per model, planned for
// its filter (usageReadSettings).
func (s *Store) UsageTotalsByDay(ctx context.Context, f *service.UsageFilter) ([]*service.DayUsage, error) {
	params := usageReadParams(f, service.NewUsageReadRange(f))
	var rows []*pgdb.UsageTotalsByDayModelRow
	err := s.usageRead(ctx, func(tx *Store) (err error) {
		rows, err = tx.q.UsageTotalsByDayModel(ctx, tx.db, (*pgdb.UsageTotalsByDayModelParams)(&params))
		return err
	})
	if err != nil {
		return nil, err
	}
	return convert.Days(convert.Map(rows, func(r *pgdb.UsageTotalsByDayModelRow) convert.DayModel {
		return convert.DayModelUsage(r, func(day time.Time) time.Time { return day })
	})), nil
}

// UsagePrune runs each batch and each hour in a transaction of its own.
// Another pruner's batch is skipped, not waited for (UsageDeleteBefore); a
// second pruner of an hour waits for the first and finds it folded
// (UsageHourlyFold); usage_daily rows are upserted in key order. So
// concurrent pruners neither count an event twice nor deadlock each other.
func (s *Store) UsagePrune(ctx context.Context, params *service.UsagePruneParams) (*service.UsagePruneResult, error) {
	return service.PruneUsage(ctx, params, service.UsagePruneSteps{
		DeleteEvents: func(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
			n, err := s.q.UsageDeleteBefore(ctx, s.db, &pgdb.UsageDeleteBeforeParams{Before: cutoff, MaxRows: int64(limit)})
			return n, s.fail(err)
		},
		FoldHour: func(ctx context.Context, cutoff time.Time) (int, error) {
			var n int
			err := s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error {
				rows, err := tx.q.UsageHourlyFold(ctx, tx.db, cutoff)
				if err != nil || len(rows) == 0 {
					return tx.fail(err)
				}
				hourly := convert.Map(rows, func(r *pgdb.UsageHourly) *service.UsageHourly { return (*service.UsageHourly)(r) })
				if _, err := tx.q.UsageDailyAddMany(ctx, tx.db, usageDailyColumns(service.FoldHourly(hourly))); err != nil {
					return tx.fail(err)
				}
				n = len(rows)
				return nil
			})
			return n, err
		},
	})
}

// UsageRollUp rolls up each batch in a transaction of its own. Another
// instance's batch is skipped, not waited for (UsageRollUpBatch), and
// usage_hourly rows are upserted in key order.
func (s *Store) UsageRollUp(ctx context.Context, batchSize int) (int64, error) {
	return service.RollUpInBatches(ctx, batchSize, func(ctx context.Context, limit int) (int64, error) {
		var n int64
		err := s.withTx(ctx, pgx.TxOptions{}, func(tx *Store) error {
			events, err := tx.q.UsageRollUpBatch(ctx, tx.db, int64(limit))
			if err != nil || len(events) == 0 {
				return tx.fail(err)
			}
			var rollup service.UsageRollup
			for _, e := range events {
				rollup.Add(e.TokenID, e.ProjectID, e.Model, e.CreatedAt, e.Status, e.PromptTokens, e.CompletionTokens, e.TotalTokens)
			}
			if _, err := tx.q.UsageHourlyAdd(ctx, tx.db, usageHourlyColumns(rollup.Rows())); err != nil {
				return tx.fail(err)
			}
			n = int64(len(events))
			return nil
		})
		return n, err
	})
}

// usageHourlyColumns turns rows into the column arrays UsageHourlyAdd unnests.
func usageHourlyColumns(rows []*service.UsageHourly) *pgdb.UsageHourlyAddParams {
	n := len(rows)
	p := &pgdb.UsageHourlyAddParams{
		TokenIds: make([]int64, n), ProjectIds: make([]int64, n), Hours: make([]time.Time, n), Models: make([]string, n),
		Requests: make([]int64, n), Errors: make([]int64, n), PromptTokens: make([]int64, n),
		CompletionTokens: make([]int64, n), TotalTokens: make([]int64, n),
	}
	for i, r := range rows {
		p.TokenIds[i], p.ProjectIds[i], p.Hours[i], p.Models[i] = r.TokenID, r.ProjectID, r.Hour, r.Model
		p.Requests[i], p.Errors[i], p.PromptTokens[i] = r.Requests, r.Errors, r.PromptTokens
		p.CompletionTokens[i], p.TotalTokens[i] = r.CompletionTokens, r.TotalTokens
	}
	return p
}

// usageDailyColumns turns rows into the column arrays UsageDailyAddMany unnests.
func usageDailyColumns(rows []*service.UsageDaily) *pgdb.UsageDailyAddManyParams {
	n := len(rows)
	p := &pgdb.UsageDailyAddManyParams{
		Days: make([]time.Time, n), ProjectIds: make([]int64, n), TokenIds: make([]int64, n), Models: make([]string, n),
		Requests: make([]int64, n), Errors: make([]int64, n), PromptTokens: make([]int64, n),
		CompletionTokens: make([]int64, n), TotalTokens: make([]int64, n),
	}
	for i, r := range rows {
		p.Days[i], p.ProjectIds[i], p.TokenIds[i], p.Models[i] = r.Day, r.ProjectID, r.TokenID, r.Model
		p.Requests[i], p.Errors[i], p.PromptTokens[i] = r.Requests, r.Errors, r.PromptTokens
		p.CompletionTokens[i], p.TotalTokens[i] = r.CompletionTokens, r.TotalTokens
	}
	return p
}

func (s *Store) UsageList(ctx context.Context, p *service.UsageListParams) ([]*service.UsageEvent, error) {
	rows, err := s.q.UsageList(ctx, s.db, &pgdb.UsageListParams{
		ProjectID: p.ProjectID,
		TokenID:   p.TokenID,
		BeforeID:  convert.BeforeID(p.BeforeID),
		MaxRows:   service.PageLimit(p.Limit),
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, usageEventFromRow), nil
}

func (s *Store) AuditInsert(ctx context.Context, p *service.AuditInsertParams) (*service.AuditEvent, error) {
	details := "{}"
	if p.Details != nil {
		details = string(p.Details)
	}
	row, err := s.q.AuditInsert(ctx, s.db, &pgdb.AuditInsertParams{
		Actor:     p.Actor,
		Action:    p.Action,
		ProjectID: p.ProjectID,
		TokenID:   p.TokenID,
		Result:    p.Result,
		Details:   details,
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return auditEventFromRow(row), nil
}

func (s *Store) AuditList(ctx context.Context, p *service.AuditListParams) ([]*service.AuditEvent, error) {
	rows, err := s.q.AuditList(ctx, s.db, &pgdb.AuditListParams{
		ProjectID: p.ProjectID,
		BeforeID:  convert.BeforeID(p.BeforeID),
		MaxRows:   service.PageLimit(p.Limit),
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return convert.Map(rows, auditEventFromRow), nil
}

func projectFromRow(r *pgdb.Project) *service.Project {
	return &service.Project{
		ID:               r.ID,
		Name:             r.Name,
		APIKeyCiphertext: r.ApiKeyCiphertext,
		APIKeyHint:       r.ApiKeyHint,
		IsActive:         r.IsActive,
		CreatedAt:        r.CreatedAt.UTC(),
		UpdatedAt:        r.UpdatedAt.UTC(),
	}
}

func tokenFromRow(r *pgdb.Token) *service.Token {
	t := service.Token(*r)
	t.ExpiresAt = t.ExpiresAt.UTC()
	t.CreatedAt = t.CreatedAt.UTC()
	t.UpdatedAt = t.UpdatedAt.UTC()
	t.LastUsedAt, t.LeaseUntil = utcPtr(t.LastUsedAt), utcPtr(t.LeaseUntil)
	return &t
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	utc := t.UTC()
	return &utc
}

func usageEventFromRow(r *pgdb.UsageEvent) *service.UsageEvent {
	return &service.UsageEvent{
		ID:               r.ID,
		TokenID:          r.TokenID,
		ProjectID:        r.ProjectID,
		Method:           r.Method,
		Path:             r.Path,
		Model:            r.Model,
		Status:           r.Status,
		PromptTokens:     r.PromptTokens,
		CompletionTokens: r.CompletionTokens,
		TotalTokens:      r.TotalTokens,
		LatencyMS:        r.LatencyMs,
		CreatedAt:        r.CreatedAt.UTC(),
		EventID:          r.EventID,
	}
}

func usageDailyFromRow(r *pgdb.UsageDaily) *service.UsageDaily {
	d := service.UsageDaily(*r)
	d.Day = d.Day.UTC()
	return &d
}

func auditEventFromRow(r *pgdb.AuditEvent) *service.AuditEvent {
	return &service.AuditEvent{
		ID:        r.ID,
		Actor:     r.Actor,
		Action:    r.Action,
		ProjectID: r.ProjectID,
		TokenID:   r.TokenID,
		Result:    r.Result,
		Details:   json.RawMessage(r.Details),
		CreatedAt: r.CreatedAt.UTC(),
	}
}
