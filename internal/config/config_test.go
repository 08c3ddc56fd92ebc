package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/tlstest"
	"github.com/llmproxy/llmproxy/service"
)

// env returns a getenv over vars; the SQLite database goes into a fresh
// directory unless vars name one.
func env(t *testing.T, vars map[string]string) func(string) string {
	t.Helper()
	if _, ok := vars["DATABASE_PATH"]; !ok {
		vars["DATABASE_PATH"] = filepath.Join(t.TempDir(), "db", "llmproxy.db")
	}
	return func(name string) string { return vars[name] }
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	vars := map[string]string{}
	c, err := Load(env(t, vars))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.ListenAddr != ":8080" {
		t.Errorf("ListenAddr = %q, want :8080", c.ListenAddr)
	}
	if c.Storage.Driver != service.DriverSQLite {
		t.Errorf("Driver = %q, want sqlite", c.Storage.Driver)
	}
	if c.Upstream.String() != DefaultUpstreamURL {
		t.Errorf("Upstream = %q, want %q", c.Upstream, DefaultUpstreamURL)
	}
	if !c.ManagementTokenGenerated || len(c.ManagementToken) < 40 {
		t.Errorf("management token %q generated=%v, want a long generated token", c.ManagementToken, c.ManagementTokenGenerated)
	}
	if c.LogLevel != slog.LevelInfo {
		t.Errorf("LogLevel = %v, want info", c.LogLevel)
	}
	if c.UsageRetentionDays != 90 {
		t.Errorf("UsageRetentionDays = %d, want 90", c.UsageRetentionDays)
	}
	if c.BodyReadTimeout != 60*time.Second || !c.AccessLog || c.UpstreamIdleTimeout != 90*time.Second {
		t.Errorf("BodyReadTimeout = %v, AccessLog = %v, UpstreamIdleTimeout = %v; want 60s, true and 90s",
			c.BodyReadTimeout, c.AccessLog, c.UpstreamIdleTimeout)
	}
	wantKeyFile := filepath.Join(filepath.Dir(vars["DATABASE_PATH"]), KeyFileName)
	if c.KeyFile != wantKeyFile || !c.KeyFileCreated {
		t.Errorf("KeyFile = %q created=%v, want %q created", c.KeyFile, c.KeyFileCreated, wantKeyFile)
	}
	info, err := os.Stat(wantKeyFile)
	if err != nil {
		t.Fatalf("key file: %v", err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %v, want 0600", mode)
	}

	// A second start reuses the key file, so stored ciphertexts stay readable.
	sealed := c.Keys.Encrypt("sk-upstream")
	again, err := Load(env(t, vars))
	if err != nil {
		t.Fatalf("second Load: %v", err)
	}
	if again.KeyFileCreated {
		t.Error("second Load created the key file again")
	}
	if plain, err := again.Keys.Decrypt(sealed); err != nil || plain != "sk-upstream" {
		t.Errorf("Decrypt with reloaded key = %q, %v", plain, err)
	}
	if again.ManagementToken == c.ManagementToken {
		t.Error("generated management tokens repeat")
	}
}

func TestLoadExplicit(t *testing.T) {
	t.Parallel()
	key := secrets.NewKey()
	c, err := Load(env(t, map[string]string{
		"LISTEN_ADDR":           "127.0.0.1:0",
		"UPSTREAM_URL":          "http://127.0.0.1:9999/base",
		"MANAGEMENT_TOKEN":      "admin-secret-0123456789",
		"ENCRYPTION_KEY":        key,
		"LOG_LEVEL":             "DEBUG",
		"USAGE_RETENTION_DAYS":  "7",
		"BODY_READ_TIMEOUT":     "2m30s",
		"ACCESS_LOG":            "false",
		"TRUSTED_PROXIES":       "10.0.0.0/8, 192.0.2.7",
		"UPSTREAM_IDLE_TIMEOUT": "4s",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.ListenAddr != "127.0.0.1:0" || c.Upstream.String() != "http://127.0.0.1:9999/base" ||
		c.ManagementToken != "admin-secret-0123456789" || c.ManagementTokenGenerated || c.LogLevel != slog.LevelDebug ||
		c.UsageRetentionDays != 7 || fmt.Sprint(c.TrustedProxies) != "[10.0.0.0/8 192.0.2.7/32]" ||
		c.BodyReadTimeout != 150*time.Second || c.AccessLog || c.UpstreamIdleTimeout != 4*time.Second {
		t.Errorf("Load = %+v", c)
	}
	if c.KeyFile != "" {
		t.Errorf("KeyFile = %q although ENCRYPTION_KEY is set", c.KeyFile)
	}
	master, _ := secrets.ParseKey(key)
	want, _ := secrets.NewKeys(master)
	if plain, err := want.Decrypt(c.Keys.Encrypt("x")); err != nil || plain != "x" {
		t.Errorf("Keys do not come from ENCRYPTION_KEY: %q, %v", plain, err)
	}
}

func TestLoadManagementTokenMinimumLength(t *testing.T) {
	t.Parallel()
	token := strings.Repeat("k", MinManagementTokenLength)
	if c, err := Load(env(t, map[string]string{"MANAGEMENT_TOKEN": token})); err != nil || c.ManagementToken != token {
		t.Fatalf("Load with a %d-character MANAGEMENT_TOKEN = %v, %v; want it accepted", len(token), c, err)
	}
	c, err := Load(env(t, map[string]string{"MANAGEMENT_TOKEN": token[1:]}))
	if err == nil || !strings.Contains(err.Error(), "want at least 16") {
		t.Fatalf("Load with a %d-character MANAGEMENT_TOKEN = %+v, %v; want too short", len(token)-1, c, err)
	}
}

func TestLoadTLS(t *testing.T) {
	t.Parallel()
	pair, other := tlstest.Write(t), tlstest.Write(t)
	c, err := Load(env(t, map[string]string{"TLS_CERT_FILE": pair.CertFile, "TLS_KEY_FILE": pair.KeyFile}))
	if err != nil || c.TLSCertificate == nil || c.TLSCertificate.Leaf.Subject.CommonName != "llmproxy test" {
		t.Fatalf("Load with a valid pair = %+v, %v", c, err)
	}
	if c, err := Load(env(t, map[string]string{})); err != nil || c.TLSCertificate != nil {
		t.Errorf("Load without TLS files = %+v, %v; want no certificate", c, err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cert, key, prefix, says string
	}{
		{pair.CertFile, "", "TLS_KEY_FILE", "set both"},
		{"", pair.KeyFile, "TLS_CERT_FILE", "set both"},
		{missing, pair.KeyFile, "TLS_CERT_FILE", "no such file"},
		{pair.CertFile, missing, "TLS_CERT_FILE", "no such file"},
		{garbage, pair.KeyFile, "TLS_CERT_FILE", "PEM"},
		{pair.CertFile, other.KeyFile, "TLS_CERT_FILE", "does not match"},
	} {
		_, err := Load(env(t, map[string]string{"TLS_CERT_FILE": tc.cert, "TLS_KEY_FILE": tc.key}))
		if err == nil || !strings.HasPrefix(err.Error(), tc.prefix) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Load(TLS_CERT_FILE=%q, TLS_KEY_FILE=%q) = %v, want an error starting with %s that says %q", tc.cert, tc.key, err, tc.prefix, tc.says)
		}
	}
}

func TestLoadPostgresNeedsKey(t *testing.T) {
	t.Parallel()
	_, err := Load(env(t, map[string]string{
		"DB_DRIVER":    "postgres",
		"DATABASE_URL": "postgres://u@localhost/db",
	}))
	if err == nil || !strings.Contains(err.Error(), "ENCRYPTION_KEY: required when DB_DRIVER=postgres") {
		t.Fatalf("Load = %v, want ENCRYPTION_KEY required", err)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	const secretValue = "not-base64-secret!!"
	cases := []struct {
		name, value string
	}{
		{"LISTEN_ADDR", "8080"},
		{"DB_DRIVER", "mysql"},
		{"DATABASE_URL", "mysql://x"}, // with DB_DRIVER=postgres below
		{"DATABASE_POOL_SIZE", "-1"},
		{"DATABASE_MAX_IDLE_CONNS", "many"},
		{"DATABASE_CONN_MAX_LIFETIME", "forever"},
		{"UPSTREAM_URL", "api.openai.com"},
		{"UPSTREAM_URL", "ftp://example.com"},
		{"UPSTREAM_URL", "http://"},
		{"UPSTREAM_URL", "https://example.com/?a=b"},
		{"UPSTREAM_URL", "https://user:pw@example.com"},
		{"UPSTREAM_URL", "http://[::1"},
		{"MANAGEMENT_TOKEN", "two words"},
		{"MANAGEMENT_TOKEN", "tab\there"},
		{"MANAGEMENT_TOKEN", "zq"},
		{"MANAGEMENT_TOKEN", "fifteen-chars-x"},
		{"ENCRYPTION_KEY", secretValue},
		{"ENCRYPTION_KEY", "c2hvcnQ="},
		{"LOG_LEVEL", "verbose"},
		{"BODY_READ_TIMEOUT", "60"},
		{"BODY_READ_TIMEOUT", "-1s"},
		{"BODY_READ_TIMEOUT", "0s"},
		{"UPSTREAM_IDLE_TIMEOUT", "5"},
		{"UPSTREAM_IDLE_TIMEOUT", "0s"},
		{"ACCESS_LOG", "sometimes"},
		{"TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal"},
		{"TRUSTED_PROXIES", "10.0.0.0/40"},
		{"USAGE_RETENTION_DAYS", "-1"},
		{"USAGE_RETENTION_DAYS", "1.5"},
		{"USAGE_RETENTION_DAYS", "90d"},
		{"USAGE_RETENTION_DAYS", "36501"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{tc.name: tc.value}
			if tc.name == "DATABASE_URL" {
				vars["DB_DRIVER"] = "postgres"
				vars["ENCRYPTION_KEY"] = secrets.NewKey()
			}
			dir := t.TempDir()
			vars["DATABASE_PATH"] = filepath.Join(dir, "llmproxy.db")
			c, err := Load(env(t, vars))
			if err == nil {
				t.Fatalf("Load = %+v, want an error", c)
			}
			if !strings.HasPrefix(err.Error(), tc.name) {
				t.Errorf("error %q does not start with %s", err, tc.name)
			}
			if (tc.name == "ENCRYPTION_KEY" || tc.name == "MANAGEMENT_TOKEN") && strings.Contains(err.Error(), tc.value) {
				t.Errorf("error %q shows the secret value", err)
			}
			// A bad configuration leaves no key file behind.
			if _, statErr := os.Stat(filepath.Join(dir, KeyFileName)); statErr == nil {
				t.Error("key file created for a bad configuration")
			}
		})
	}
}

func TestLoadReportsEveryBadVariable(t *testing.T) {
	t.Parallel()
	_, err := Load(env(t, map[string]string{"LISTEN_ADDR": "x", "LOG_LEVEL": "loud", "UPSTREAM_URL": "nope"}))
	if err == nil {
		t.Fatal("Load accepted three bad variables")
	}
	for _, name := range []string{"LISTEN_ADDR", "LOG_LEVEL", "UPSTREAM_URL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not mention %s", err, name)
		}
	}
}

func TestLoadBadKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyFileName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(env(t, map[string]string{"DATABASE_PATH": filepath.Join(dir, "llmproxy.db")}))
	if err == nil || !strings.HasPrefix(err.Error(), "ENCRYPTION_KEY: unset, and the key file") {
		t.Fatalf("Load = %v, want an ENCRYPTION_KEY key file error", err)
	}
}

func TestLoadRetentionZeroKeepsUsageForever(t *testing.T) {
	t.Parallel()
	c, err := Load(env(t, map[string]string{"USAGE_RETENTION_DAYS": "0"}))
	if err != nil || c.UsageRetentionDays != 0 {
		t.Fatalf("Load(USAGE_RETENTION_DAYS=0) = %+v, %v; want 0 days", c, err)
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"LISTEN_ADDR", "DB_DRIVER", "DATABASE_PATH", "DATABASE_URL", "DATABASE_POOL_SIZE",
		"DATABASE_MAX_IDLE_CONNS", "DATABASE_CONN_MAX_LIFETIME", "UPSTREAM_URL", "UPSTREAM_IDLE_TIMEOUT", "MANAGEMENT_TOKEN", "TRUSTED_PROXIES", "TLS_CERT_FILE", "TLS_KEY_FILE", "ENCRYPTION_KEY", "USAGE_RETENTION_DAYS", "BODY_READ_TIMEOUT", "ACCESS_LOG", "LOG_LEVEL"} {
		if !strings.Contains(Help, name) {
			t.Errorf("Help does not mention %s", name)
		}
	}
}
