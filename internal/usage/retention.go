package usage

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

// RetentionOptions configure RunRetention.
type RetentionOptions struct {
	// Days is how long raw events are kept: each run rolls up the UTC days
	// that ended at least Days days ago (service.Store.UsagePrune).
	Days     int
	Interval time.Duration // between runs; the first is at once
	Logger   *slog.Logger  // default: discard
	// Now is the clock; default time.Now. Which instance's clock decides
	// does not matter: pruning is exactly once whatever the cut-off.
	Now func() time.Time
}

// RunRetention prunes usage at once and then every Interval until ctx
// ends; a run cut short by ctx rolls back only its current batch. A failed
// run is logged and retried at the next tick.
func RunRetention(ctx context.Context, pruner service.Store, opts RetentionOptions) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	retention := time.Duration(opts.Days) * 24 * time.Hour
	ticker := time.NewTicker(opts.Interval)
	defer ticker.Stop()
	for {
		result, err := pruner.UsagePrune(ctx, &service.UsagePruneParams{Before: opts.Now().Add(-retention)})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			level := slog.LevelError
			if errors.Is(err, service.ErrUnavailable) {
				level = slog.LevelWarn // the database is down; the next run catches up
			}
			opts.Logger.Log(ctx, level, "usage retention failed; retrying later",
				"err", err, "rolled_up", result.Events, "before", result.Cutoff, "retry_in", opts.Interval.String())
		case result.Events > 0:
			opts.Logger.Info("usage retention: rolled up raw usage events into daily totals",
				"rolled_up", result.Events, "batches", result.Batches, "before", result.Cutoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
