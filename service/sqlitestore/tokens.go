package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/internal/convert"
)

func (s *Store) TokenCreate(ctx context.Context, params *service.TokenCreateParams) (*service.Token, error) {
	// One transaction, so that a refusal is explained by the project as the insert saw it.
	return inTx(ctx, s, func(tx *Store) (*service.Token, error) {
		row, err := tx.q.TokenCreate(ctx, tx.tx, &sqlitedb.TokenCreateParams{
			ProjectID:   params.ProjectID,
			SecretHash:  params.SecretHash,
			TokenPrefix: params.TokenPrefix,
			ExpiresAt:   params.ExpiresAt.UnixMilli(),
			MaxRequests: params.MaxRequests,
		})
		if err == nil {
			return tokenFromRow(row), nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, mapError(err)
		}
		// The insert refused: the project is missing (ErrNotFound) or inactive.
		if _, err := tx.ProjectGetByID(ctx, params.ProjectID); err != nil {
			return nil, err
		}
		return nil, service.ErrProjectInactive
	})
}

func (s *Store) TokenGetByID(ctx context.Context, id int64) (*service.Token, error) {
	row, err := s.q.TokenGetByID(ctx, s.reads(), id)
	if err != nil {
		return nil, mapError(err)
	}
	return tokenFromRow(row), nil
}

func (s *Store) TokenGetByHash(ctx context.Context, secretHash []byte) (*service.Token, error) {
	row, err := s.q.TokenGetByHash(ctx, s.reads(), secretHash)
	if err != nil {
		return nil, mapError(err)
	}
	return tokenFromRow(row), nil
}

// TokenAuthenticate runs on the reader pool: it writes nothing.
func (s *Store) TokenAuthenticate(ctx context.Context, secretHash []byte) (*service.Token, *service.Project, error) {
	row, err := s.q.TokenAuthenticate(ctx, s.reads(), secretHash)
	if err != nil {
		return nil, nil, mapError(err)
	}
	token, project := tokenFromRow(&row.Token), projectFromRow(&row.Project)
	if err := service.AuthenticationRefusal(token, project, row.Expired != 0); err != nil {
		return nil, nil, err
	}
	return token, project, nil
}

func (s *Store) TokenList(ctx context.Context, params *service.TokenListParams) ([]*service.Token, error) {
	rows, err := s.q.TokenList(ctx, s.reads(), &sqlitedb.TokenListParams{
		ProjectID: params.ProjectID,
		AfterID:   params.AfterID,
		MaxRows:   service.PageLimit(params.Limit),
	})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, tokenFromRow), nil
}

// TokenAdmit is on every proxied request: one UPDATE ... RETURNING decides,
// and only a refusal costs the extra reads that explain it.
func (s *Store) TokenAdmit(ctx context.Context, id int64) (*service.Token, error) {
	row, err := service.AdmitOrExplain(ctx, s, 1, func() (*sqlitedb.Token, bool, error) {
		return matched(s.q.TokenAdmit(ctx, s.writes(), id))
	}, func() (*service.Token, error) { return s.TokenGetByID(ctx, id) })
	if err != nil {
		return nil, err
	}
	return tokenFromRow(row), nil
}

// TokenAdmitByHash is the proxy's TokenAdmit: one UPDATE finds the token by
// its hash, counts n requests and returns the token with its project.
func (s *Store) TokenAdmitByHash(ctx context.Context, p *service.TokenAdmitByHashParams) (*service.Token, *service.Project, error) {
	if err := service.CheckAdmission(p); err != nil {
		return nil, nil, err
	}
	params := &sqlitedb.TokenAdmitByHashParams{N: p.N, Reserve: p.Reserve, LeaseMs: service.LeaseIn(p.Lease, time.Millisecond), SecretHash: p.SecretHash}
	row, err := service.AdmitOrExplain(ctx, s, p.N+p.Reserve, func() (*sqlitedb.TokenAdmitByHashRow, bool, error) {
		return matched(s.q.TokenAdmitByHash(ctx, s.writes(), params))
	}, func() (*service.Token, error) { return s.TokenGetByHash(ctx, p.SecretHash) })
	if err != nil {
		return nil, nil, err
	}
	token, project := tokenAdmitByHashFromRow(row)
	return token, project, nil
}

// matched adapts a :one query's result to AdmitOrExplain: no row is a
// refusal, not an error.
func matched[T any](row T, err error) (T, bool, error) {
	if errors.Is(err, sql.ErrNoRows) {
		return row, false, nil
	}
	return row, err == nil, mapError(err)
}

func (s *Store) TokenSettleReserved(ctx context.Context, tokenID, reserved, unused int64) error {
	if err := service.CheckSettlement(reserved, unused); err != nil {
		return err
	}
	settled, err := s.q.TokenSettleReserved(ctx, s.writes(), &sqlitedb.TokenSettleReservedParams{Unused: unused, Reserved: reserved, ID: tokenID})
	if err != nil {
		return mapError(err)
	}
	if settled == 0 {
		return service.ExplainSettlementRefusal(ctx, s, tokenID, reserved)
	}
	return nil
}

func (s *Store) TokenUpdate(ctx context.Context, params *service.TokenUpdateParams) (*service.Token, error) {
	if params.IsActive == nil && !params.SetMaxRequests {
		return s.TokenGetByID(ctx, params.ID)
	}
	return inTx(ctx, s, func(tx *Store) (*service.Token, error) {
		if params.RestrictsAdmission() {
			tx.leases.AddToken(params.ID)
		}
		var row *sqlitedb.Token
		var err error
		if params.IsActive != nil {
			row, err = tx.q.TokenSetActive(ctx, tx.tx, &sqlitedb.TokenSetActiveParams{IsActive: *params.IsActive, ID: params.ID})
			if err != nil {
				return nil, mapError(err)
			}
		}
		if params.SetMaxRequests {
			row, err = tx.q.TokenSetMaxRequests(ctx, tx.tx, &sqlitedb.TokenSetMaxRequestsParams{MaxRequests: params.MaxRequests, ID: params.ID})
			if err != nil {
				return nil, mapError(err)
			}
		}
		return tokenFromRow(row), nil
	})
}

func (s *Store) TokenRevokeAllForProject(ctx context.Context, projectID int64) (*service.RevokeResult, error) {
	return inTx(ctx, s, func(tx *Store) (*service.RevokeResult, error) {
		if _, err := tx.ProjectGetByID(ctx, projectID); err != nil {
			return nil, err
		}
		already, err := tx.q.TokenCountRevokedForProject(ctx, tx.tx, projectID)
		if err != nil {
			return nil, mapError(err)
		}
		revoked, err := tx.q.TokenRevokeAllForProject(ctx, tx.tx, projectID)
		if err != nil {
			return nil, mapError(err)
		}
		if revoked > 0 {
			tx.leases.AddProject(projectID)
		}
		return &service.RevokeResult{RevokedCount: revoked, AlreadyRevokedCount: already}, nil
	})
}
