package service

import (
	"context"
	"time"
)

// Store is the storage contract, all of it: every backend (service/sqlitestore,
// service/pgstore) implements every method with the same behaviour, checked
// by the conformance suite in service/storetest, so callers never probe a
// store for optional parts. A method a backend truly cannot provide returns
// ErrNotImplemented. Errors wrap the sentinels in errors.go so callers test
// them with errors.Is.
type Store interface {
	// ProjectCreate returns ErrConflict when the name is taken.
	ProjectCreate(ctx context.Context, params *ProjectCreateParams) (*Project, error)
	ProjectGetByID(ctx context.Context, id int64) (*Project, error)
	ProjectList(ctx context.Context, params *ProjectListParams) ([]*Project, error)
	// ProjectUpdate returns ErrNotFound or ErrConflict (name taken).
	ProjectUpdate(ctx context.Context, params *ProjectUpdateParams) (*Project, error)

	// TokenCreate returns ErrNotFound for an unknown project, ErrProjectInactive
	// for an inactive one and ErrConflict for a duplicate secret hash.
	TokenCreate(ctx context.Context, params *TokenCreateParams) (*Token, error)
	TokenGetByID(ctx context.Context, id int64) (*Token, error)
	TokenGetByHash(ctx context.Context, secretHash []byte) (*Token, error)
	// TokenAuthenticate reads the token with this secret hash and its
	// project in one read-only statement and counts nothing, so a proxy can
	// refuse a request before reading its body. It refuses as TokenAdmit
	// does, by the database's clock and in AdmissionRefusal's order, except
	// for the limit, which only an admission can judge: ErrNotFound,
	// ErrTokenRevoked, ErrProjectInactive or ErrTokenExpired, never
	// ErrLimitReached. A refusal returns neither token nor project.
	TokenAuthenticate(ctx context.Context, secretHash []byte) (*Token, *Project, error)
	TokenList(ctx context.Context, params *TokenListParams) ([]*Token, error)
	// TokenAdmit counts one request against the token, atomically, if the
	// token is active, unexpired, under its limit and its project is active.
	// Otherwise it counts nothing and returns ErrNotFound, ErrTokenRevoked,
	// ErrTokenExpired, ErrLimitReached or ErrProjectInactive; when several
	// apply, the one AdmissionRefusal puts first.
	TokenAdmit(ctx context.Context, id int64) (*Token, error)
	// TokenAdmitByHash is TokenAdmit of n ≥ 0 requests at once, for the
	// token with this secret hash, also returning the token's project as the
	// admission saw it: the proxy authenticates and admits in one statement.
	// It also reserves reserve ≥ 0 more requests (n + reserve ≥ 1): counts
	// them in RequestCount and RequestsReserved. The caller may admit them
	// without asking again for at most AdmissionLease from before the call,
	// and must settle them with TokenSettleReserved when the lease ends.
	//
	// It counts all n + reserve or nothing: it returns ErrNotFound for an
	// unknown hash, TokenAdmit's errors otherwise, and a *LimitError when the
	// limit leaves fewer than n + reserve.
	TokenAdmitByHash(ctx context.Context, secretHash []byte, n, reserve int64) (*Token, *Project, error)
	// TokenSettleReserved takes reserved requests off the token's
	// RequestsReserved, and the unused ones of them off its RequestCount:
	// those used stay counted as admitted. It returns ErrNotFound for an
	// unknown token and ErrInvalid unless 0 ≤ unused ≤ reserved, 1 ≤ reserved
	// and at least reserved are reserved.
	TokenSettleReserved(ctx context.Context, tokenID, reserved, unused int64) error
	// TokenUpdate returns ErrNotFound for an unknown id.
	TokenUpdate(ctx context.Context, params *TokenUpdateParams) (*Token, error)
	// TokenRevokeAllForProject returns ErrNotFound for an unknown project.
	TokenRevokeAllForProject(ctx context.Context, projectID int64) (*RevokeResult, error)

	// UsageInsertBatch writes all events or none, skipping events whose
	// EventID is already stored, and returns how many it wrote.
	UsageInsertBatch(ctx context.Context, events []*UsageEventCreateParams) (int64, error)
	UsageTotals(ctx context.Context, filter *UsageFilter) (*UsageTotals, error)
	UsageList(ctx context.Context, params *UsageListParams) ([]*UsageEvent, error)
	// UsagePrune rolls raw events past the retention up into usage_daily,
	// by the rules in usageprune.go.
	UsagePrune(ctx context.Context, params *UsagePruneParams) (*UsagePruneResult, error)

	AuditInsert(ctx context.Context, params *AuditInsertParams) (*AuditEvent, error)
	AuditList(ctx context.Context, params *AuditListParams) ([]*AuditEvent, error)

	// Whole tables, for db copy, export and import (copy.go).
	Dumper
	Loader
	// TableTruncateAll deletes every row of every table, in one transaction.
	TableTruncateAll(ctx context.Context) error
	// TableSequencesReset makes the next id each table generates follow its
	// largest id, and returns those next ids keyed by table name (tables
	// without ids, such as usage_daily, are left out).
	TableSequencesReset(ctx context.Context) (map[string]int64, error)
	// Backup writes a consistent copy of the database to the file path,
	// which must not exist yet (fs.ErrExist), while the database stays in
	// use. ErrNotImplemented where the database is backed up with its own
	// tools (PostgreSQL: pg_dump).
	Backup(ctx context.Context, path string) error

	// InTx runs fn with a Store bound to one transaction, committed when fn
	// returns nil and rolled back otherwise, returning fn's error as it is.
	// Nested calls join the outer one.
	InTx(ctx context.Context, fn func(tx Store) error) error
	// Ping reports whether the database answers (for /ready).
	Ping(ctx context.Context) error
	// PoolStats describes the database connections, for /metrics.
	PoolStats() PoolStats
	Close() error
}

// AdmissionLease is how long a proxy may go on admitting the requests a
// token's TokenAdmitByHash reserved, on the strength of that call, counted
// from before that call. Changes that would refuse such requests (a token
// deactivated or given a limit, a project deactivated or given another key,
// a project's tokens revoked) therefore return only AdmissionLease after
// their commit (AwaitAdmissionLeases): every instance has stopped using
// what it was told before the change by the time the change is reported
// done. A statement that starts after the commit sees the change.
const AdmissionLease = 100 * time.Millisecond

// AwaitAdmissionLeases waits until every lease granted before it was called
// has ended. Stores call it after committing a change that restricts
// admission.
func AwaitAdmissionLeases() { time.Sleep(AdmissionLease) }
