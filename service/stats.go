package service

import "time"

// PoolStats describes a backend's database connections, for /metrics.
type PoolStats struct {
	MaxOpen      int64         // connections allowed
	Open         int64         // connections open now
	InUse        int64         // connections running a query or transaction
	Idle         int64         // open connections waiting for work
	WaitCount    int64         // acquisitions that had to wait, since open
	WaitDuration time.Duration // total time spent waiting, since open
}
