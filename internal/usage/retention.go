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
	// Days is how long raw events are kept: each run prunes the UTC days
	// that ended at least Days days ago (service.Store.UsagePrune); 0 keeps
	// them forever.
	Days     int
	Interval time.Duration // between runs; the first is at once
	Logger   *slog.Logger  // default: discard
	// Now is the clock; default time.Now. Which instance's clock decides
	// does not matter: pruning is exactly once whatever the cut-off.
	Now func() time.Time
}

// RunRetention maintains usage at once and then every Interval until ctx
// ends: it rolls up the events not in the hourly rollup yet (those written
// before it existed, loaded by db copy or import, or written by an older
// llmproxy during a rolling upgrade; service.Store.UsageRollUp), then
// prunes. A run cut short by ctx rolls back only its current batch. A
// failed run is logged and retried at the next tick.
func RunRetention(ctx context.Context, store service.Store, opts RetentionOptions) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	retention := time.Duration(opts.Days) * 24 * time.Hour
	ticker := time.NewTicker(opts.Interval)
	defer ticker.Stop()
	failed := func(what string, err error, args ...any) {
		level := slog.LevelError
		if errors.Is(err, service.ErrUnavailable) {
			level = slog.LevelWarn // the database is down; the next run catches up
		}
		args = append([]any{"err", err}, args...)
		opts.Logger.Log(ctx, level, what+" failed; retrying later", append(args, "retry_in", opts.Interval.String())...)
	}
	for {
		rolled, err := store.UsageRollUp(ctx, 0)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failed("usage rollup", err, "rolled_up", rolled)
		case rolled > 0:
			opts.Logger.Info("usage rollup: added usage events to the hourly rollup", "rolled_up", rolled)
		}
		if opts.Days > 0 && err == nil {
			result, err := store.UsagePrune(ctx, &service.UsagePruneParams{Before: opts.Now().Add(-retention)})
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				failed("usage retention", err, "deleted", result.Events, "hours", result.Hours, "before", result.Cutoff)
			case result.Events > 0 || result.Hours > 0:
				opts.Logger.Info("usage retention: deleted raw usage events and folded their hours into daily totals",
					"deleted", result.Events, "batches", result.Batches, "hours", result.Hours, "before", result.Cutoff)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
