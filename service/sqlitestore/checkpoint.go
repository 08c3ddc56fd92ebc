package sqlitestore

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"time"
)

// checkpointInterval is how often the background checkpointer copies the
// WAL into the database file.
const checkpointInterval = time.Second

// walBackstopPages is the WAL size (pages of 4 KiB) at which the writer
// checkpoints by itself, should the background checkpointer fall behind.
// SQLite's default, 1000 pages, makes the writer stop every few seconds
// under load to copy pages and fsync the file while every admission and
// usage batch waits behind it (it doubled the proxy's p99 latency).
const walBackstopPages = 25000

// checkpointer runs PASSIVE checkpoints from a reader connection: they copy
// what the WAL holds into the database file without blocking the writer
// (which keeps appending) or readers, and once a checkpoint is complete the
// writer's next transaction starts the WAL over.
type checkpointer struct {
	db    *sql.DB
	every time.Duration
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once

	runs atomic.Int64 // checkpoints that completed without error (tests)
	last atomic.Value // the last checkpoint's walFrames
}

// walFrames is what PRAGMA wal_checkpoint reports: frames in the WAL and
// frames of it now in the database file.
type walFrames struct{ log, checkpointed int64 }

func startCheckpointer(db *sql.DB, every time.Duration) *checkpointer {
	c := &checkpointer{db: db, every: every, done: make(chan struct{})}
	c.wg.Go(c.run)
	return c
}

func (c *checkpointer) run() {
	ticker := time.NewTicker(c.every)
	defer ticker.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-ticker.C:
			c.checkpoint()
		}
	}
}

// checkpoint runs one PASSIVE checkpoint. A failure (busy, I/O) is left to
// the next tick or to the writer's backstop.
func (c *checkpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var busy int64
	var frames walFrames
	if err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames.log, &frames.checkpointed); err != nil {
		return
	}
	c.last.Store(frames)
	c.runs.Add(1)
}

// stop ends the checkpointer and waits for a running checkpoint; closing
// the last connection checkpoints what is left.
func (c *checkpointer) stop() {
	c.once.Do(func() { close(c.done) })
	c.wg.Wait()
}
