package pgstore

import (
	"context"

	"github.com/llmproxy/llmproxy/gen/pgdb"
	"github.com/llmproxy/llmproxy/service"
)

func (s *Store) SessionCreate(ctx context.Context, p *service.SessionCreateParams) (*service.Session, error) {
	row, err := s.q.SessionCreate(ctx, s.db, &pgdb.SessionCreateParams{
		SecretHash: p.SecretHash, CsrfToken: p.CSRFToken, ExpiresAt: p.ExpiresAt.UTC(),
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return sessionFromRow(row), nil
}

func (s *Store) SessionGetByHash(ctx context.Context, secretHash []byte) (*service.Session, error) {
	row, err := s.q.SessionGetByHash(ctx, s.db, secretHash)
	if err != nil {
		return nil, s.fail(err)
	}
	return sessionFromRow(row), nil
}

func (s *Store) SessionDelete(ctx context.Context, secretHash []byte) error {
	n, err := s.q.SessionDelete(ctx, s.db, secretHash)
	if err != nil {
		return s.fail(err)
	}
	if n == 0 {
		return service.ErrNotFound
	}
	return nil
}

func (s *Store) SessionDeleteExpired(ctx context.Context) (int64, error) {
	n, err := s.q.SessionDeleteExpired(ctx, s.db)
	if err != nil {
		return 0, s.fail(err)
	}
	return n, nil
}

func sessionFromRow(r *pgdb.Session) *service.Session {
	return &service.Session{
		SecretHash: r.SecretHash,
		CSRFToken:  r.CsrfToken,
		ExpiresAt:  r.ExpiresAt.UTC(),
		CreatedAt:  r.CreatedAt.UTC(),
	}
}
