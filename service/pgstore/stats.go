package pgstore

import "github.com/llmproxy/llmproxy/service"

// PoolStats reports the pgxpool's connections.
func (s *Store) PoolStats() service.PoolStats {
	st := s.pool.Stat()
	return service.PoolStats{
		MaxOpen:      int64(st.MaxConns()),
		Open:         int64(st.TotalConns()),
		InUse:        int64(st.AcquiredConns()),
		Idle:         int64(st.IdleConns()),
		WaitCount:    st.EmptyAcquireCount(),
		WaitDuration: st.EmptyAcquireWaitTime(),
	}
}
