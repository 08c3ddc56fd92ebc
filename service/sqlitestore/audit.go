package sqlitestore

import (
	"context"

	"github.com/llmproxy/llmproxy/gen/sqlitedb"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/internal/convert"
)

func (s *Store) AuditInsert(ctx context.Context, params *service.AuditInsertParams) (*service.AuditEvent, error) {
	details := string(params.Details)
	if params.Details == nil {
		details = "{}"
	}
	row, err := s.q.AuditInsert(ctx, s.writes(), &sqlitedb.AuditInsertParams{
		Actor:     params.Actor,
		Action:    params.Action,
		ProjectID: params.ProjectID,
		TokenID:   params.TokenID,
		Result:    params.Result,
		Details:   details,
	})
	if err != nil {
		return nil, mapError(err)
	}
	return auditEventFromRow(row), nil
}

func (s *Store) AuditList(ctx context.Context, params *service.AuditListParams) ([]*service.AuditEvent, error) {
	rows, err := s.q.AuditList(ctx, s.reads(), &sqlitedb.AuditListParams{
		ProjectID: params.ProjectID,
		BeforeID:  convert.BeforeID(params.BeforeID),
		MaxRows:   service.PageLimit(params.Limit),
	})
	if err != nil {
		return nil, mapError(err)
	}
	return convert.Map(rows, auditEventFromRow), nil
}
