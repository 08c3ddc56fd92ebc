// Package config reads llmproxy's configuration from the environment, as the
// HTTP and configuration contract lists it, and checks every value at start.
package config

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/llmproxy/llmproxy/internal/authlimit"
	"github.com/llmproxy/llmproxy/internal/proxy"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
)

// Help describes every variable, for `llmproxy serve --help`.
const Help = `Configuration (environment):
  LISTEN_ADDR                  HTTP listen address (default :8080); HTTP/1.1 and HTTP/2 without
                               TLS (h2c, prior knowledge) are served on it
  TLS_CERT_FILE, TLS_KEY_FILE  PEM certificate (chain) and private key: set both to serve HTTPS
                               (HTTP/2 and HTTP/1.1) on LISTEN_ADDR instead; read at start
  DB_DRIVER                    sqlite (default) or postgres
  DATABASE_PATH                SQLite file (default ./data/llmproxy.db); its directory is created
  DATABASE_URL                 Postgres URL; required when DB_DRIVER=postgres
  DATABASE_POOL_SIZE           Postgres pool size (default 25)
  DATABASE_MAX_IDLE_CONNS      Postgres idle connections kept (default 5)
  DATABASE_CONN_MAX_LIFETIME   Postgres connection lifetime (default 5m)
  UPSTREAM_URL                 upstream base URL, http or https (default https://api.openai.com);
                               the request path /v1/... is appended unchanged
  UPSTREAM_IDLE_TIMEOUT        how long an idle kept-alive upstream connection is kept, a Go
                               duration (default 90s); set it below the upstream's own keep-alive
                               timeout (uvicorn and vLLM: 5s, so 4s)
  MANAGEMENT_TOKEN             Bearer secret for /manage/* and the dashboard: at least 16
                               printable characters without spaces. If unset, one is generated
                               at start and printed once to stderr
  TRUSTED_PROXIES              comma-separated IP addresses and CIDR prefixes of reverse proxies
                               whose X-Forwarded-For names the client (default: none, the TCP
                               peer is the client). Failed management logins are throttled per
                               client: 10 a minute
  ENCRYPTION_KEY               32 bytes, base64: encrypts upstream keys at rest and keys token
                               hashes. If unset with SQLite, the key file llmproxy.key beside the
                               database is used (created 0600 on first start: back it up). Required
                               with Postgres.
  USAGE_RETENTION_DAYS         days raw usage events are kept (default 90); older ones are rolled
                               up into daily totals per project, token and model, hourly. 0 keeps
                               them forever
  BODY_READ_TIMEOUT            longest a client may take to send a /v1 request body, a Go
                               duration (default 60s); a slower one gets 408
  ACCESS_LOG                   true (default): one JSON log line per /v1 request; false: none
  LOG_LEVEL                    debug, info (default), warn or error; logs are JSON on stderr
`

// DefaultBodyReadTimeout is BODY_READ_TIMEOUT's default.
const DefaultBodyReadTimeout = 60 * time.Second

// DefaultUpstreamIdleTimeout is UPSTREAM_IDLE_TIMEOUT's default: the
// upstream client's own.
const DefaultUpstreamIdleTimeout = proxy.DefaultUpstreamIdleTimeout

// DefaultUpstreamURL is OpenAI's API.
const DefaultUpstreamURL = "https://api.openai.com"

// KeyFileName is the key file created beside the SQLite database when
// ENCRYPTION_KEY is unset.
const KeyFileName = "llmproxy.key"

// MinManagementTokenLength is the shortest MANAGEMENT_TOKEN accepted: with
// the management API open to the network, a short one could be guessed.
const MinManagementTokenLength = 16

// USAGE_RETENTION_DAYS: its default, and a bound that keeps the retention
// a valid time.Duration with room to spare.
const (
	DefaultUsageRetentionDays = 90
	MaxUsageRetentionDays     = 36500
)

// Config is the validated configuration.
type Config struct {
	ListenAddr string
	// TLSCertificate is the pair TLS_CERT_FILE and TLS_KEY_FILE name; nil
	// when neither is set (plain HTTP).
	TLSCertificate *tls.Certificate
	Storage        service.Config
	Upstream       *url.URL

	ManagementToken string
	// ManagementTokenGenerated says MANAGEMENT_TOKEN was unset and the token
	// was made up: the caller shows it once, or nobody could use the API.
	ManagementTokenGenerated bool

	// TrustedProxies are the peers whose X-Forwarded-For is believed when
	// telling clients apart (management login throttling, audit actors).
	TrustedProxies []netip.Prefix

	Keys *secrets.Keys
	// KeyFile is the key file used when ENCRYPTION_KEY is unset; KeyFileCreated
	// says it was created now, so the caller warns that it must be kept.
	KeyFile        string
	KeyFileCreated bool

	// UpstreamIdleTimeout closes upstream connections left idle this long.
	UpstreamIdleTimeout time.Duration

	// BodyReadTimeout bounds the time a client takes to send a body.
	BodyReadTimeout time.Duration
	// AccessLog says whether each /v1 request gets a log line.
	AccessLog bool

	// UsageRetentionDays is how many days raw usage events are kept before
	// they are rolled up into daily totals; 0: forever.
	UsageRetentionDays int

	LogLevel slog.Level
}

// Load reads and checks the configuration. Every error names its variable
// (several errors are joined) and never includes a secret's value. With
// SQLite and no ENCRYPTION_KEY it reads or creates the key file, but only
// once everything else is valid.
func Load(getenv func(string) string) (*Config, error) {
	c := &Config{
		ListenAddr: ":8080", BodyReadTimeout: DefaultBodyReadTimeout, AccessLog: true,
		UpstreamIdleTimeout: DefaultUpstreamIdleTimeout,
		UsageRetentionDays:  DefaultUsageRetentionDays, LogLevel: slog.LevelInfo,
	}
	var errs []error
	var err error

	if v := getenv("LISTEN_ADDR"); v != "" {
		if _, _, err := net.SplitHostPort(v); err != nil {
			errs = append(errs, fmt.Errorf("LISTEN_ADDR=%q: want host:port, such as :8080 or 127.0.0.1:8080", v))
		}
		c.ListenAddr = v
	}
	if c.TLSCertificate, err = loadTLS(getenv("TLS_CERT_FILE"), getenv("TLS_KEY_FILE")); err != nil {
		errs = append(errs, err)
	}
	if c.Storage, err = service.ConfigFromEnv(getenv); err != nil {
		errs = append(errs, err)
	}
	if c.Upstream, err = parseUpstream(getenv("UPSTREAM_URL")); err != nil {
		errs = append(errs, err)
	}
	if v := getenv("UPSTREAM_IDLE_TIMEOUT"); v != "" {
		if c.UpstreamIdleTimeout, err = time.ParseDuration(v); err != nil || c.UpstreamIdleTimeout <= 0 {
			errs = append(errs, fmt.Errorf("UPSTREAM_IDLE_TIMEOUT=%q: want a positive Go duration, such as 4s or 90s", v))
		}
	}
	if c.ManagementToken, c.ManagementTokenGenerated, err = managementToken(getenv("MANAGEMENT_TOKEN")); err != nil {
		errs = append(errs, err)
	}
	if v := getenv("TRUSTED_PROXIES"); v != "" {
		if c.TrustedProxies, err = authlimit.ParseTrustedProxies(v); err != nil {
			errs = append(errs, fmt.Errorf("TRUSTED_PROXIES=%q: %w", v, err))
		}
	}
	if v := getenv("USAGE_RETENTION_DAYS"); v != "" {
		if c.UsageRetentionDays, err = parseRetentionDays(v); err != nil {
			errs = append(errs, err)
		}
	}
	if v := getenv("BODY_READ_TIMEOUT"); v != "" {
		if c.BodyReadTimeout, err = time.ParseDuration(v); err != nil || c.BodyReadTimeout <= 0 {
			errs = append(errs, fmt.Errorf("BODY_READ_TIMEOUT=%q: want a positive Go duration, such as 60s or 2m", v))
		}
	}
	if v := getenv("ACCESS_LOG"); v != "" {
		if c.AccessLog, err = strconv.ParseBool(v); err != nil {
			errs = append(errs, fmt.Errorf("ACCESS_LOG=%q: want true or false", v))
		}
	}
	if c.LogLevel, err = parseLogLevel(getenv("LOG_LEVEL")); err != nil {
		errs = append(errs, err)
	}
	encoded := getenv("ENCRYPTION_KEY")
	var master []byte
	switch {
	case encoded != "":
		if master, err = secrets.ParseKey(encoded); err != nil {
			// The value is a secret: say what is wrong, never what it is.
			errs = append(errs, fmt.Errorf("ENCRYPTION_KEY: %w (want 32 random bytes in base64, e.g. from `openssl rand -base64 32`)", err))
		}
	case c.Storage.Driver == service.DriverPostgres:
		errs = append(errs, errors.New("ENCRYPTION_KEY: required when DB_DRIVER=postgres (32 random bytes in base64, e.g. from `openssl rand -base64 32`)"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	if master == nil {
		c.KeyFile = filepath.Join(filepath.Dir(c.Storage.SQLitePath), KeyFileName)
		if master, c.KeyFileCreated, err = secrets.LoadOrCreateKeyFile(c.KeyFile); err != nil {
			return nil, fmt.Errorf("ENCRYPTION_KEY: unset, and the %w", err)
		}
	}
	if c.Keys, err = secrets.NewKeys(master); err != nil {
		return nil, fmt.Errorf("ENCRYPTION_KEY: %w", err)
	}
	return c, nil
}

// loadTLS reads the certificate and key pair, when both files are named.
func loadTLS(certFile, keyFile string) (*tls.Certificate, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "":
		return nil, errors.New("TLS_CERT_FILE: unset while TLS_KEY_FILE is set; set both to serve HTTPS, or neither")
	case keyFile == "":
		return nil, errors.New("TLS_KEY_FILE: unset while TLS_CERT_FILE is set; set both to serve HTTPS, or neither")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// The error names the file that could not be read, or says the
		// two do not match; it never shows the key.
		return nil, fmt.Errorf("TLS_CERT_FILE=%q, TLS_KEY_FILE=%q: %w", certFile, keyFile, err)
	}
	return &cert, nil
}

func parseUpstream(v string) (*url.URL, error) {
	if v == "" {
		v = DefaultUpstreamURL
	}
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return nil, fmt.Errorf("UPSTREAM_URL=%q: malformed URL", v)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("UPSTREAM_URL=%q: want an absolute http:// or https:// URL", v)
	case u.Host == "":
		return nil, fmt.Errorf("UPSTREAM_URL=%q: no host", v)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("UPSTREAM_URL=%q: want a base URL without credentials, query or fragment", v)
	}
	return u, nil
}

// managementToken returns the configured token or, when unset, a random one
// with 256 bits of entropy.
func managementToken(v string) (token string, generated bool, err error) {
	if v == "" {
		return "mgmt-" + rand.Text() + rand.Text(), true, nil
	}
	// A Bearer credential is one visible-ASCII word; anything else could never match.
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return "", false, errors.New("MANAGEMENT_TOKEN: must be printable ASCII without spaces")
		}
	}
	if len(v) < MinManagementTokenLength {
		// The length only: the value is a secret.
		return "", false, fmt.Errorf("MANAGEMENT_TOKEN: %d characters is too short to resist guessing; want at least %d (e.g. from `openssl rand -hex 24`)", len(v), MinManagementTokenLength)
	}
	return v, false, nil
}

func parseRetentionDays(v string) (int, error) {
	days, err := strconv.Atoi(v)
	if err != nil || days < 0 || days > MaxUsageRetentionDays {
		return 0, fmt.Errorf("USAGE_RETENTION_DAYS=%q: want a whole number of days from 1 to %d, or 0 to keep raw usage forever", v, MaxUsageRetentionDays)
	}
	return days, nil
}

func parseLogLevel(v string) (slog.Level, error) {
	switch strings.ToLower(v) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", v)
}
