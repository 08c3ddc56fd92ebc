package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	dashboard "github.com/llmproxy/llmproxy/internal/admin" // "admin" is a test helper here
	"github.com/llmproxy/llmproxy/internal/authlimit"
	"github.com/llmproxy/llmproxy/internal/config"
	"github.com/llmproxy/llmproxy/internal/manage"
	"github.com/llmproxy/llmproxy/internal/metrics"
	"github.com/llmproxy/llmproxy/internal/proxy"
	"github.com/llmproxy/llmproxy/internal/server"
	"github.com/llmproxy/llmproxy/internal/usage"
	"github.com/llmproxy/llmproxy/service"
)

const serveHelp = "Usage: llmproxy serve\n\n" + config.Help

// Shutdown budget: in-flight requests (streams included) get drainTimeout
// to finish; then the rest are cut off and get abortTimeout to record their
// usage; then queued usage gets flushTimeout to reach the database.
const (
	openTimeout  = 30 * time.Second // connect and migrate
	drainTimeout = 30 * time.Second
	abortTimeout = 5 * time.Second
	flushTimeout = 30 * time.Second
)

// readHeaderTimeout bounds a client's time to send a request's headers.
const readHeaderTimeout = 10 * time.Second

// usageRetentionInterval is how often usage is maintained: hourly, each run
// finds at most the day that has just passed the retention, and the events
// an older instance wrote during a rolling upgrade to roll up.
const usageRetentionInterval = time.Hour

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return serve(ctx, args, os.Getenv, stdout, stderr, nil)
}

// serve runs the proxy until ctx ends, then shuts down gracefully.
// listening, if set, is told the address once the server accepts connections.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, listening func(net.Addr)) error {
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

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if cfg.ManagementTokenGenerated {
		// Shown once, as plain text, so the operator can copy it.
		fmt.Fprintf(stderr, "MANAGEMENT_TOKEN is not set; the management API accepts this token until restart:\n\n    %s\n\n", cfg.ManagementToken)
	}
	if cfg.KeyFileCreated {
		log.Warn("ENCRYPTION_KEY is not set: created a key file; back it up, stored upstream keys cannot be decrypted without it", "path", cfg.KeyFile)
	} else if cfg.KeyFile != "" {
		log.Info("ENCRYPTION_KEY is not set: using the key file", "path", cfg.KeyFile)
	}

	store, err := openStore(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("store open", "driver", cfg.Storage.Driver)
	// Stopped and waited for before the store closes (defers run last
	// first). With USAGE_RETENTION_DAYS=0 it only rolls up.
	stopRetention := startRetention(ctx, store, usage.RetentionOptions{
		Days: cfg.UsageRetentionDays, Interval: usageRetentionInterval, Logger: log,
	})
	defer stopRetention()

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR=%q: %w", cfg.ListenAddr, err)
	}

	m := metrics.New()
	recorder := usage.NewRecorder(store, usage.Options{Logger: log, BatchSize: usageBatchSize(cfg.Storage.Driver)})
	m.GaugeFunc("llmproxy_usage_queue_depth", "Usage events accepted but not yet written to the database.",
		func() float64 { return float64(recorder.Depth()) })
	m.DatabasePool(store.PoolStats)
	manager := manage.New(store, cfg.Keys, log)
	var accessLog *slog.Logger
	if cfg.AccessLog {
		accessLog = log
	}
	// One limit for both ways of presenting the management token.
	authLimiter := authlimit.New(authlimit.Options{TrustedProxies: cfg.TrustedProxies})
	proxyHandler := proxy.New(proxy.Options{
		Store: store, Keys: cfg.Keys, Upstream: cfg.Upstream, Recorder: recorder, Metrics: m, Logger: log,
		BodyReadTimeout: cfg.BodyReadTimeout, AccessLog: accessLog, ClientAddr: authLimiter.ClientAddr,
		Transport: proxy.NewTransport(proxy.TransportOptions{IdleTimeout: cfg.UpstreamIdleTimeout}),
	})
	handler := server.New(server.Options{
		Store:   store,
		Manager: manager,
		Metrics: m,
		Proxy:   proxyHandler,
		Admin: dashboard.New(dashboard.Options{
			Manager: manager, Store: store, ManagementToken: cfg.ManagementToken, AuthLimiter: authLimiter, Logger: log,
		}),
		ManagementToken: cfg.ManagementToken,
		AuthLimiter:     authLimiter,
		Logger:          log,
	})
	// Handlers are counted so that shutdown flushes usage only after the
	// last one, even one cut off mid-stream, has recorded its request.
	var inflight sync.WaitGroup
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Done()
			handler.ServeHTTP(w, r)
		}),
		// No WriteTimeout: it would cut long streams. Slow clients are bounded
		// by the header timeout, then by ReadTimeout for the whole request
		// (what net/http reads of a body a handler left unread included),
		// and idle connections by IdleTimeout. The proxy sets its own
		// deadline for a body (BODY_READ_TIMEOUT). net/http clears the
		// read deadline once a body has been read, so neither ends a long
		// stream.
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout + cfg.BodyReadTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		Protocols:         serveProtocols(),
	}
	scheme := "http"
	if cfg.TLSCertificate != nil {
		scheme = "https"
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cfg.TLSCertificate}, MinVersion: tls.VersionTLS12}
	}
	log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "upstream", cfg.Upstream.String())
	if listening != nil {
		listening(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // the certificate is in TLSConfig
			return
		}
		errc <- srv.Serve(ln)
	}()
	var serveErr error
	select {
	case serveErr = <-errc:
		log.Error("server stopped", "err", serveErr)
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests", "timeout", drainTimeout.String())
	}
	return errors.Join(serveErr, shutdown(context.WithoutCancel(ctx), log, srv, &inflight, proxyHandler, recorder))
}

// serveProtocols are HTTP/1.1 and HTTP/2: over TLS negotiated by ALPN,
// without TLS by prior knowledge (h2c), as gRPC-style clients and
// `curl --http2-prior-knowledge` speak it. There is no h2c upgrade from
// HTTP/1.1; net/http does not offer it.
func serveProtocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

// shutdown stops accepting, lets in-flight requests finish (cutting off
// those still running after drainTimeout), gives back the requests the
// proxy reserved and did not use, and flushes the usage queue.
func shutdown(ctx context.Context, log *slog.Logger, srv *http.Server, inflight *sync.WaitGroup, proxyHandler *proxy.Handler, recorder *usage.Recorder) error {
	drainCtx, cancel := context.WithTimeout(ctx, drainTimeout)
	err := srv.Shutdown(drainCtx)
	cancel()
	if err != nil {
		log.Warn("in-flight requests did not finish in time; cutting them off", "err", err)
		_ = srv.Close() // cancels the requests' contexts, which ends their upstream calls
	}
	done := make(chan struct{})
	go func() { inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(abortTimeout):
		log.Error("requests still running after being cut off; their usage may be lost")
	}

	flushCtx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	// Not fatal: what is not given back stays counted, never lost.
	if err := proxyHandler.Close(flushCtx); err != nil {
		log.Error("reserved requests not given back; request_count counts them as used", "err", err)
	}
	if err := recorder.Close(flushCtx); err != nil {
		return fmt.Errorf("flush usage: %w", err)
	}
	log.Info("shutdown complete")
	return nil
}

// startRetention runs usage.RunRetention in the background; the function
// it returns stops it and waits until it has.
func startRetention(ctx context.Context, pruner service.Store, opts usage.RetentionOptions) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		usage.RunRetention(ctx, pruner, opts)
	}()
	return func() {
		cancel()
		<-done
	}
}

// openStore opens (and migrates) the configured database; its errors name
// the variable that locates it.
func openStore(ctx context.Context, cfg service.Config) (service.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	store, err := service.Open(ctx, cfg)
	var notBuilt *service.DriverNotBuiltError
	if errors.As(err, &notBuilt) {
		return nil, err // names DB_DRIVER itself
	}
	if err != nil {
		variable := "DATABASE_PATH"
		if cfg.Driver == service.DriverPostgres {
			variable = "DATABASE_URL"
		}
		return nil, fmt.Errorf("%s: %w", variable, err)
	}
	return store, nil
}

// usageBatchSize is the most usage events written at once. On SQLite a
// batch holds the single writer that every admission waits for, so batches
// stay short (100 events, under a millisecond); on PostgreSQL they block no
// admission and larger ones cost less (0: the recorder's default, 500).
// Measured in docs/performance.md.
func usageBatchSize(driver string) int {
	if driver == service.DriverSQLite {
		return 100
	}
	return 0
}
