package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/llmproxy/llmproxy/service"
)

const serveHelp = `Usage: llmproxy serve

Configuration (environment):
  LISTEN_ADDR                  HTTP listen address (default :8080)
  DB_DRIVER                    sqlite (default) or postgres
  DATABASE_PATH                SQLite file (default ./data/llmproxy.db); its directory is created
  DATABASE_URL                 Postgres URL; required when DB_DRIVER=postgres
  DATABASE_POOL_SIZE           Postgres pool size (default 25)
  DATABASE_MAX_IDLE_CONNS      Postgres idle connections kept (default 5)
  DATABASE_CONN_MAX_LIFETIME   Postgres connection lifetime (default 5m)
`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, serveHelp)
			return nil
		}
		return fmt.Errorf("%w: serve: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: serve takes no arguments", errUsage)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	listenAddr := os.Getenv("LISTEN_ADDR")
	if listenAddr == "" {
		listenAddr = ":8080"
	}

	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	store, cfg, err := openStore(openCtx, false)
	cancel()
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("store open", "driver", cfg.Driver)

	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR=%q: %w", listenAddr, err)
	}
	srv := &http.Server{
		Handler:           healthHandler(store),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// healthHandler serves /health (the process is up) and /ready (the database answers).
func healthHandler(store service.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "database unreachable", "code": "database_unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
