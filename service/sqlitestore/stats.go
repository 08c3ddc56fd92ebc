package sqlitestore

import (
	"database/sql"

	"github.com/llmproxy/llmproxy/service"
)

// PoolStats adds up the writer connection and the reader pool.
func (s *Store) PoolStats() service.PoolStats {
	w, r := s.writer.Stats(), s.reader.Stats()
	sum := func(f func(sql.DBStats) int) int64 { return int64(f(w) + f(r)) }
	return service.PoolStats{
		MaxOpen:      sum(func(s sql.DBStats) int { return s.MaxOpenConnections }),
		Open:         sum(func(s sql.DBStats) int { return s.OpenConnections }),
		InUse:        sum(func(s sql.DBStats) int { return s.InUse }),
		Idle:         sum(func(s sql.DBStats) int { return s.Idle }),
		WaitCount:    w.WaitCount + r.WaitCount,
		WaitDuration: w.WaitDuration + r.WaitDuration,
	}
}
