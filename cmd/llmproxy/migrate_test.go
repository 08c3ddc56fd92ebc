package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/internal/pgtest"
)

func runMigrateCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := runMigrate(context.Background(), args, &stdout, &stderr)
	return stdout.String(), err
}

func TestMigrateApplyAndStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  func(t *testing.T)
	}{
		{"sqlite", func(t *testing.T) {
			t.Setenv("DB_DRIVER", "sqlite")
			// The directory does not exist yet: apply creates it.
			t.Setenv("DATABASE_PATH", filepath.Join(t.TempDir(), "sub", "llmproxy.db"))
		}},
		{"postgres", func(t *testing.T) {
			t.Setenv("DB_DRIVER", "postgres")
			t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env(t)
			out, err := runMigrateCmd(t, "status")
			if err != nil || !strings.Contains(out, "current version: none") || !strings.Contains(out, "pending  ") {
				t.Fatalf("status before apply: %v\n%s", err, out)
			}
			out, err = runMigrateCmd(t, "apply")
			if err != nil || !strings.Contains(out, "applied ") {
				t.Fatalf("apply: %v\n%s", err, out)
			}
			out, err = runMigrateCmd(t, "apply")
			if err != nil || strings.TrimSpace(out) != "no pending migrations" {
				t.Fatalf("second apply: %v\n%s", err, out)
			}
			out, err = runMigrateCmd(t, "status")
			if err != nil || strings.Contains(out, "current version: none") || strings.Contains(out, "pending") {
				t.Fatalf("status after apply: %v\n%s", err, out)
			}
		})
	}
}

func TestMigrateDiffCheckOnRepository(t *testing.T) {
	t.Setenv("ATLAS_DEV_URL", pgtest.ServerURL(t))
	out, err := runMigrateCmd(t, "diff", "--check", "--config", "../../atlas.hcl")
	if err != nil {
		t.Fatalf("schema.sql and the migrations differ: %v\n%s", err, out)
	}
	if out != "sqlite: no changes\npostgres: no changes\n" {
		t.Fatalf("output %q", out)
	}
}

func TestMigrateUsage(t *testing.T) {
	t.Setenv("DB_DRIVER", "mysql")
	for _, args := range [][]string{
		nil,
		{"bogus"},
		{"apply", "extra"},
		{"diff"},
		{"diff", "a", "b"},
		{"diff", "--check", "name"},
		{"diff", "--dialect", "mysql", "name"},
		{"lint", "--latest", "-1"},
		{"lint", "--nope"},
	} {
		if _, err := runMigrateCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("migrate %q: err = %v, want a usage error", args, err)
		}
	}
	if _, err := runMigrateCmd(t, "apply"); err == nil || !strings.Contains(err.Error(), "DB_DRIVER") {
		t.Errorf("apply with DB_DRIVER=mysql: err = %v, want it named", err)
	}
	for _, args := range [][]string{{"--help"}, {"diff", "--help"}, {"lint", "-h"}} {
		out, err := runMigrateCmd(t, args...)
		if err != nil || !strings.Contains(out, "Usage: llmproxy migrate") {
			t.Errorf("migrate %q: %v\n%s", args, err, out)
		}
	}
}
