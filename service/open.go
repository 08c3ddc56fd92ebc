package service

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Config selects and configures the storage backend.
type Config struct {
	Driver          string        // DB_DRIVER: sqlite (default) or postgres
	SQLitePath      string        // DATABASE_PATH
	DatabaseURL     string        // DATABASE_URL, required for postgres
	PoolSize        int           // DATABASE_POOL_SIZE
	MaxIdleConns    int           // DATABASE_MAX_IDLE_CONNS
	ConnMaxLifetime time.Duration // DATABASE_CONN_MAX_LIFETIME
	// SkipMigrate opens the database as it is; by default Open applies pending migrations.
	SkipMigrate bool
}

// DefaultConfig is the configuration with nothing set: SQLite in ./data.
func DefaultConfig() Config {
	return Config{
		Driver:          DriverSQLite,
		SQLitePath:      "./data/llmproxy.db",
		PoolSize:        25,
		MaxIdleConns:    5,
		ConnMaxLifetime: 5 * time.Minute,
	}
}

// ConfigFromEnv reads the storage variables of the configuration contract.
// An error names the variable and what is wrong with it.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	if v := getenv("DB_DRIVER"); v != "" {
		c.Driver = v
	}
	if v := getenv("DATABASE_PATH"); v != "" {
		c.SQLitePath = v
	}
	c.DatabaseURL = getenv("DATABASE_URL")
	var err error
	if c.PoolSize, err = positiveIntEnv(getenv, "DATABASE_POOL_SIZE", c.PoolSize); err != nil {
		return c, err
	}
	if c.MaxIdleConns, err = positiveIntEnv(getenv, "DATABASE_MAX_IDLE_CONNS", c.MaxIdleConns); err != nil {
		return c, err
	}
	if v := getenv("DATABASE_CONN_MAX_LIFETIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("DATABASE_CONN_MAX_LIFETIME=%q: want a positive duration such as 5m", v)
		}
		c.ConnMaxLifetime = d
	}
	return c, c.Validate()
}

func positiveIntEnv(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive integer", name, v)
	}
	return n, nil
}

// Validate checks the configuration without touching the database.
func (c Config) Validate() error {
	switch c.Driver {
	case DriverSQLite:
		if c.SQLitePath == "" {
			return fmt.Errorf("DATABASE_PATH: must not be empty")
		}
	case DriverPostgres:
		if c.DatabaseURL == "" {
			return fmt.Errorf("DATABASE_URL: required when DB_DRIVER=postgres")
		}
		if err := checkPostgresURL(c.DatabaseURL); err != nil {
			return fmt.Errorf("DATABASE_URL: %w", err)
		}
		if c.MaxIdleConns > c.PoolSize {
			return fmt.Errorf("DATABASE_MAX_IDLE_CONNS=%d: must not exceed DATABASE_POOL_SIZE=%d", c.MaxIdleConns, c.PoolSize)
		}
	default:
		return fmt.Errorf("DB_DRIVER=%q: unknown driver, want %q or %q", c.Driver, DriverSQLite, DriverPostgres)
	}
	return nil
}

// checkPostgresURL accepts postgres:// URLs and key=value connection strings;
// its messages never include the password.
func checkPostgresURL(s string) error {
	if !strings.Contains(s, "://") {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("not a postgres:// URL or key=value connection string")
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("malformed URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("scheme %q: want postgres://", u.Scheme)
	}
	return nil
}

// OpenFunc opens a backend; adapters register one with Register.
type OpenFunc func(ctx context.Context, cfg Config) (Store, error)

var (
	driversMu sync.RWMutex
	drivers   = map[string]OpenFunc{}
)

// Register makes a backend available to Open. Adapters call it from init, so
// a binary supports the drivers whose packages it imports.
func Register(driver string, open OpenFunc) {
	driversMu.Lock()
	defer driversMu.Unlock()
	drivers[driver] = open
}

// Open validates cfg, opens the chosen backend and, unless cfg.SkipMigrate,
// applies pending migrations.
func Open(ctx context.Context, cfg Config) (Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	driversMu.RLock()
	open, ok := drivers[cfg.Driver]
	names := make([]string, 0, len(drivers))
	for name := range drivers {
		names = append(names, name)
	}
	driversMu.RUnlock()
	if !ok {
		sort.Strings(names)
		return nil, &DriverNotBuiltError{Driver: cfg.Driver, Available: names}
	}
	return open(ctx, cfg)
}

// DriverNotBuiltError is a valid DB_DRIVER whose adapter this binary leaves
// out (a lean build, e.g. -tags nopostgres).
type DriverNotBuiltError struct {
	Driver    string
	Available []string
}

func (e *DriverNotBuiltError) Error() string {
	return fmt.Sprintf("DB_DRIVER=%s: this llmproxy was built without that driver (it has: %s); "+
		"use the standard build (go build ./cmd/llmproxy) or the container image, which have every driver",
		e.Driver, strings.Join(e.Available, ", "))
}
