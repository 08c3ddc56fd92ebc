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
	// TokenAdmitByHash is TokenAdmit of p.N ≥ 0 requests at once, for the
	// token with this secret hash, also returning the token's project as the
	// admission saw it: the proxy authenticates and admits in one statement.
	// It also reserves p.Reserve ≥ 0 more requests (N + Reserve ≥ 1): counts
	// them in RequestCount and RequestsReserved. The caller may admit them
	// without asking again for at most p.Lease from before the call, and
	// must settle them with TokenSettleReserved when the lease ends. The
	// statement records the lease's end, by the database's clock, in the
	// token's LeaseUntil (which only ever moves later), and changes that
	// restrict admission wait until then (see AdmissionLease).
	//
	// It counts all N + Reserve or nothing: it returns ErrNotFound for an
	// unknown hash, TokenAdmit's errors otherwise, a *LimitError when the
	// limit leaves fewer than N + Reserve, and ErrInvalid for counts or a
	// lease out of range.
	TokenAdmitByHash(ctx context.Context, p *TokenAdmitByHashParams) (*Token, *Project, error)
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
	// UsageTotalsByDay is UsageTotals for each UTC day of the filter's
	// range that has usage, in day order: the range cut at midnights, each
	// day counting what UsageTotals counts for its piece, so that the days
	// add up to UsageTotals of the whole range. One read, however many days.
	UsageTotalsByDay(ctx context.Context, filter *UsageFilter) ([]*DayUsage, error)
	UsageList(ctx context.Context, params *UsageListParams) ([]*UsageEvent, error)
	// UsagePrune deletes raw events past the retention and folds their
	// hours into usage_daily, by the rules in usageprune.go.
	UsagePrune(ctx context.Context, params *UsagePruneParams) (*UsagePruneResult, error)
	// UsageRollUp adds the events not yet in usage_hourly (see
	// usagerollup.go) to it, batchSize per transaction (0 or less: the
	// default), and returns how many it added.
	UsageRollUp(ctx context.Context, batchSize int) (int64, error)

	AuditInsert(ctx context.Context, params *AuditInsertParams) (*AuditEvent, error)
	AuditList(ctx context.Context, params *AuditListParams) ([]*AuditEvent, error)

	// SessionCreate returns ErrConflict for a secret hash already stored.
	SessionCreate(ctx context.Context, params *SessionCreateParams) (*Session, error)
	// SessionGetByHash returns ErrNotFound for an unknown session and for
	// one that has expired by the database's clock.
	SessionGetByHash(ctx context.Context, secretHash []byte) (*Session, error)
	// SessionDelete ends a session; ErrNotFound when there is none.
	SessionDelete(ctx context.Context, secretHash []byte) error
	// SessionDeleteExpired deletes the sessions expired by the database's
	// clock and returns how many.
	SessionDeleteExpired(ctx context.Context) (int64, error)

	// Whole tables, for db copy, export and import (copy.go), which carry
	// every table but sessions.
	Dumper
	Loader
	// TableTruncateAll deletes every row of every table, sessions included,
	// in one transaction.
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

// AdmissionLease is the lease this build's proxy asks TokenAdmitByHash
// for: how long it goes on admitting the requests a statement reserved, on
// the strength of that statement, counted from before it.
//
// Changes that would refuse such requests (a token deactivated or given a
// limit, a project deactivated or given another key, a project's tokens
// revoked) return only once every lease granted before their commit has
// ended (AwaitLeases): when the change is reported done, no instance
// admits on what it was told before. The wait follows the leases the
// database recorded (Token.LeaseUntil), measured by its clock, so
// instances asking for other leases (another build, during a rolling
// upgrade) and instances whose clocks differ agree; a change waits not at
// all when none of the tokens it affects holds a lease. A statement that
// starts after the commit sees the change.
const AdmissionLease = 100 * time.Millisecond

// MaxAdmissionLease bounds a lease: TokenAdmitByHash refuses a longer one,
// and no change waits longer for one (should the database's clock step back).
const MaxAdmissionLease = 10 * time.Second

// LeaseScope is the tokens whose leases a change that restricts admission
// must outlast: by id, and every token of a project. A Store collects it
// during a transaction and waits once it has committed.
type LeaseScope struct {
	TokenIDs   []int64
	ProjectIDs []int64
}

// AddToken and AddProject add a token, or every token of a project.
func (l *LeaseScope) AddToken(id int64)   { l.TokenIDs = append(l.TokenIDs, id) }
func (l *LeaseScope) AddProject(id int64) { l.ProjectIDs = append(l.ProjectIDs, id) }

// LeaseReader reads, after a commit, how long the latest admission lease
// of a token, or among a project's tokens, has left by the database's
// clock (0 or less: none outstanding).
type LeaseReader interface {
	TokenLeaseRemaining(ctx context.Context, tokenID int64) (time.Duration, error)
	ProjectLeaseRemaining(ctx context.Context, projectID int64) (time.Duration, error)
}

// AwaitLeases waits, once a change restricting admission has committed,
// until the latest lease among the scope's tokens has ended. It is not
// cancelled with ctx: the change is done and must not be reported so
// early. A lease that cannot be read (the database went away, or the read
// took longer than MaxAdmissionLease) is taken to be this build's
// AdmissionLease.
func AwaitLeases(ctx context.Context, scope *LeaseScope, r LeaseReader) {
	if scope == nil || len(scope.TokenIDs)+len(scope.ProjectIDs) == 0 {
		return
	}
	observe, _ := ctx.Value(leaseWaitKey{}).(func(time.Duration))
	// Bounded all the same: on PostgreSQL a read waits for the admissions
	// running, and a transaction left open on tokens would hold it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), MaxAdmissionLease)
	defer cancel()
	var until time.Time // on this machine's monotonic clock
	note := func(left time.Duration, err error) {
		if err != nil {
			left = AdmissionLease
		}
		if end := time.Now().Add(min(left, MaxAdmissionLease)); end.After(until) {
			until = end
		}
	}
	for _, id := range scope.TokenIDs {
		note(r.TokenLeaseRemaining(ctx, id))
	}
	for _, id := range scope.ProjectIDs {
		note(r.ProjectLeaseRemaining(ctx, id))
	}
	wait := max(0, time.Until(until))
	if observe != nil {
		observe(wait)
	}
	time.Sleep(wait)
}

type leaseWaitKey struct{}

// WithLeaseWaitObserver returns ctx carrying observe, which a Store calls
// with how long a change restricting admission waits for leases after its
// commit (0: none outstanding), before it waits.
func WithLeaseWaitObserver(ctx context.Context, observe func(wait time.Duration)) context.Context {
	return context.WithValue(ctx, leaseWaitKey{}, observe)
}
