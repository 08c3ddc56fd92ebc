package sqlitestore

import (
	"context"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/internal/convert"
)

func (s *Store) ProjectCreate(ctx context.Context, params *service.ProjectCreateParams) (*service.Project, error) {
	row, err := s.q.ProjectCreate(ctx, s.writes(), &sqlitedb.ProjectCreateParams{
		Name:             params.Name,
		ApiKeyCiphertext: params.APIKeyCiphertext,
		ApiKeyHint:       params.APIKeyHint,
	})
	if err != nil {
		return nil, mapError(err)
	}
	return projectFromRow(row), nil
}

func (s *Store) ProjectGetByID(ctx context.Context, id int64) (*service.Project, error) {
	row, err := s.q.ProjectGetByID(ctx, s.reads(), id)
	if err != nil {
		return nil, mapError(err)
	}
	return projectFromRow(row), nil
}

func (s *Store) ProjectList(ctx context.Context, params *service.ProjectListParams) ([]*service.Project, error) {
	rows, err := s.q.ProjectList(ctx, s.reads(), &sqlitedb.ProjectListParams{
		AfterID: params.AfterID,
		MaxRows: service.PageLimit(params.Limit),
	})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, projectFromRow), nil
}

func (s *Store) ProjectUpdate(ctx context.Context, params *service.ProjectUpdateParams) (*service.Project, error) {
	return inTx(ctx, s, func(tx *Store) (*service.Project, error) {
		if params.RestrictsAdmission() {
			tx.leases.AddProject(params.ID)
		}
		if params.IsActive != nil {
			if _, err := tx.q.ProjectSetActive(ctx, tx.tx, &sqlitedb.ProjectSetActiveParams{IsActive: *params.IsActive, ID: params.ID}); err != nil {
				return nil, mapError(err)
			}
		}
		// Unset fields are NULL, which the query's COALESCE keeps unchanged.
		row, err := tx.q.ProjectUpdate(ctx, tx.tx, &sqlitedb.ProjectUpdateParams{
			Name:             params.Name,
			ApiKeyCiphertext: params.APIKeyCiphertext,
			ApiKeyHint:       params.APIKeyHint,
			ID:               params.ID,
		})
		if err != nil {
			return nil, mapError(err)
		}
		return projectFromRow(row), nil
	})
}
