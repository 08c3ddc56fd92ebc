package pgstore

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/llmproxy/llmproxy/service"
)

func TestApplyPoolSettings(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                string
		url                 string
		cfg                 service.Config
		maxConns, warmConns int32
		lifetime, connect   time.Duration
	}{
		{"ZeroConfigGetsDefaults", "postgres://h/db", service.Config{}, 25, 5, 5 * time.Minute, 5 * time.Second},
		{"Configured", "postgres://h/db", service.Config{PoolSize: 10, MaxIdleConns: 2, ConnMaxLifetime: time.Hour}, 10, 2, time.Hour, 5 * time.Second},
		{"WarmNeverExceedsPool", "postgres://h/db", service.Config{PoolSize: 3, MaxIdleConns: 8}, 3, 3, 5 * time.Minute, 5 * time.Second},
		{"URLConnectTimeoutWins", "postgres://h/db?connect_timeout=2", service.Config{}, 25, 5, 5 * time.Minute, 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			poolCfg, err := pgxpool.ParseConfig(c.url)
			if err != nil {
				t.Fatal(err)
			}
			applyPoolSettings(poolCfg, c.cfg)
			if poolCfg.MaxConns != c.maxConns || poolCfg.MinIdleConns != c.warmConns || poolCfg.MinConns != c.warmConns {
				t.Errorf("MaxConns, MinIdleConns, MinConns = %d, %d, %d; want %d, %d, %d",
					poolCfg.MaxConns, poolCfg.MinIdleConns, poolCfg.MinConns, c.maxConns, c.warmConns, c.warmConns)
			}
			if poolCfg.MaxConnLifetime != c.lifetime || poolCfg.MaxConnIdleTime != time.Minute || poolCfg.ConnConfig.ConnectTimeout != c.connect {
				t.Errorf("MaxConnLifetime, MaxConnIdleTime, ConnectTimeout = %v, %v, %v; want %v, 1m, %v",
					poolCfg.MaxConnLifetime, poolCfg.MaxConnIdleTime, poolCfg.ConnConfig.ConnectTimeout, c.lifetime, c.connect)
			}
		})
	}
}
