package sqlitestore

import (
	"context"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
)

func (s *Store) SessionCreate(ctx context.Context, p *service.SessionCreateParams) (*service.Session, error) {
	row, err := s.q.SessionCreate(ctx, s.writes(), &sqlitedb.SessionCreateParams{
		SecretHash: p.SecretHash, CsrfToken: p.CSRFToken, ExpiresAt: p.ExpiresAt.UnixMilli(),
	})
	if err != nil {
		return nil, mapError(err)
	}
	return sessionFromRow(row), nil
}

func (s *Store) SessionGetByHash(ctx context.Context, secretHash []byte) (*service.Session, error) {
	row, err := s.q.SessionGetByHash(ctx, s.reads(), secretHash)
	if err != nil {
		return nil, mapError(err)
	}
	return sessionFromRow(row), nil
}

func (s *Store) SessionDelete(ctx context.Context, secretHash []byte) error {
	n, err := s.q.SessionDelete(ctx, s.writes(), secretHash)
	if err != nil {
		return mapError(err)
	}
	if n == 0 {
		return service.ErrNotFound
	}
	return nil
}

func (s *Store) SessionDeleteExpired(ctx context.Context) (int64, error) {
	n, err := s.q.SessionDeleteExpired(ctx, s.writes())
	return n, mapError(err)
}

func sessionFromRow(r *sqlitedb.Session) *service.Session {
	return &service.Session{
		SecretHash: r.SecretHash,
		CSRFToken:  r.CsrfToken,
		ExpiresAt:  fromMillis(r.ExpiresAt),
		CreatedAt:  fromMillis(r.CreatedAt),
	}
}
