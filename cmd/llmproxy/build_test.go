package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// goCommand runs the go tool in this package's directory, with env added to
// the environment, and returns its stdout.
func goCommand(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// TestLeanBuild builds with -tags nopostgres (the standard build is the one
// every other test runs) and checks that pgx is not in it, that Postgres is
// refused with a message saying which build has it, and that SQLite works.
func TestLeanBuild(t *testing.T) {
	t.Parallel()
	// The standard build must have pgx, or finding none in the lean one proves nothing.
	for _, tc := range []struct {
		tags    string
		wantPgx bool
	}{{"", true}, {"nopostgres", false}} {
		var pgx []string
		for _, pkg := range strings.Fields(goCommand(t, nil, "list", "-deps", "-tags", tc.tags, ".")) {
			if strings.HasPrefix(pkg, "github.com/jackc/") {
				pgx = append(pgx, pkg)
			}
		}
		if tc.wantPgx != (len(pgx) > 0) {
			t.Errorf("go list -deps -tags %q: pgx packages %v, want some: %v", tc.tags, pgx, tc.wantPgx)
		}
	}

	bin := filepath.Join(t.TempDir(), "llmproxy")
	// Built as the container image is (deploy/dockerfile_test.go) so that the
	// two builds share the build cache; neither setting changes what is linked.
	goCommand(t, []string{"CGO_ENABLED=0"}, "build", "-trimpath", "-tags", "nopostgres", "-o", bin, ".")
	run := func(t *testing.T, env []string, args ...string) (output string, exitCode int) {
		t.Helper()
		// Only a guard against a hang: every command here ends on its own.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatalf("llmproxy %s: %v", strings.Join(args, " "), err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}

	t.Run("postgres refused", func(t *testing.T) {
		t.Parallel()
		env := []string{
			"DB_DRIVER=postgres",
			// Nothing listens on port 1: a build that tried to connect would fail differently.
			"DATABASE_URL=postgres://x@127.0.0.1:1/x",
			"ENCRYPTION_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
			"MANAGEMENT_TOKEN=lean-build-test-token",
			"LISTEN_ADDR=127.0.0.1:0",
		}
		for _, args := range [][]string{{"serve"}, {"migrate", "status"}} {
			out, code := run(t, env, args...)
			if code == 0 || !strings.Contains(out, "DB_DRIVER=postgres") || !strings.Contains(out, "go build ./cmd/llmproxy") {
				t.Errorf("llmproxy %s with DB_DRIVER=postgres: exit code %d, want non-zero and a message naming the standard build:\n%s",
					strings.Join(args, " "), code, out)
			}
		}
	})

	t.Run("sqlite works", func(t *testing.T) {
		t.Parallel()
		env := []string{"DB_DRIVER=sqlite", "DATABASE_PATH=" + filepath.Join(t.TempDir(), "llmproxy.db")}
		if out, code := run(t, env, "migrate", "apply"); code != 0 || !strings.Contains(out, "applied ") {
			t.Fatalf("migrate apply: exit code %d\n%s", code, out)
		}
		out, code := run(t, env, "migrate", "status")
		if code != 0 || !strings.Contains(out, "dialect: sqlite") || strings.Contains(out, "pending") {
			t.Errorf("migrate status after apply: exit code %d\n%s", code, out)
		}
	})
}
