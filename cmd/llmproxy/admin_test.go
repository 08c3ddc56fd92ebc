package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/llmproxy/llmproxy/internal/config"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/service"
)

// admin runs one CLI command against env and decodes its JSON output into out.
func admin(t *testing.T, env map[string]string, stdin string, out any, args ...string) error {
	t.Helper()
	var stdout bytes.Buffer
	err := runAdmin(t.Context(), args[0], args[1:], func(name string) string { return env[name] }, strings.NewReader(stdin), &stdout, io.Discard)
	if err == nil && out != nil {
		if jerr := json.Unmarshal(stdout.Bytes(), out); jerr != nil {
			t.Fatalf("%v: output %q: %v", args, stdout.String(), jerr)
		}
	}
	return err
}

func TestAdminCLI(t *testing.T) {
	t.Parallel()
	for _, b := range testBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			env := b.env(t)
			var project struct{ ID, Name, APIKeyHint string }
			if err := admin(t, env, "", &project, "project", "create", "--name", "cli", "--api-key", "sk-cli-key-1234"); err != nil {
				t.Fatalf("project create: %v", err)
			}
			var fromStdin map[string]any
			if err := admin(t, env, "sk-from-stdin-5678\n", &fromStdin, "project", "create", "--name=stdin", "--api-key=-"); err != nil {
				t.Fatalf("project create --api-key -: %v", err)
			}
			if fromStdin["api_key_hint"] != "sk-...5678" {
				t.Errorf("key from stdin: hint %v", fromStdin["api_key_hint"])
			}
			var projects []map[string]any
			if err := admin(t, env, "", &projects, "project", "list"); err != nil || len(projects) != 2 || projects[0]["name"] != "cli" {
				t.Fatalf("project list = %v, %v", projects, err)
			}
			project.ID = projects[0]["id"].(string)

			var token map[string]any
			if err := admin(t, env, "", &token, "token", "create", "--project", project.ID, "--duration-minutes", "60", "--max-requests", "3"); err != nil {
				t.Fatalf("token create: %v", err)
			}
			secret, _ := token["token"].(string)
			if !secrets.ValidTokenSyntax(secret) || token["max_requests"] != 3.0 || token["project_id"] != project.ID {
				t.Errorf("token create = %v", token)
			}
			var tokens []map[string]any
			if err := admin(t, env, "", &tokens, "token", "list", "--project", project.ID); err != nil || len(tokens) != 1 {
				t.Fatalf("token list = %v, %v", tokens, err)
			}
			if _, shown := tokens[0]["token"]; shown {
				t.Error("token list shows the secret")
			}
			var revoked map[string]any
			if err := admin(t, env, "", &revoked, "token", "revoke", tokens[0]["id"].(string)); err != nil || revoked["is_active"] != false {
				t.Fatalf("token revoke = %v, %v", revoked, err)
			}

			// The CLI shares the server's key: the stored upstream key decrypts with it.
			cfg, err := config.Load(func(name string) string { return env[name] })
			if err != nil {
				t.Fatal(err)
			}
			store, err := service.Open(t.Context(), cfg.Storage)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			p, err := store.ProjectGetByID(t.Context(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if key, err := cfg.Keys.Decrypt(p.APIKeyCiphertext); err != nil || key != "sk-cli-key-1234" {
				t.Errorf("stored key decrypts to %q, %v", key, err)
			}
			if tok, err := store.TokenGetByHash(t.Context(), cfg.Keys.HashToken(secret)); err != nil || tok.IsActive {
				t.Errorf("token by hash = %+v, %v; want the revoked token", tok, err)
			}
			events, err := store.AuditList(t.Context(), &service.AuditListParams{})
			if err != nil || len(events) != 4 || events[0].Action != "token.revoke" || events[0].Actor != cliActor {
				t.Errorf("audit = %+v, %v", events, err)
			}

			// Failures of the operation itself are errors, not usage errors.
			err = admin(t, env, "", nil, "project", "create", "--name", "cli", "--api-key", "k")
			if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "already exists") {
				t.Errorf("duplicate project create = %v", err)
			}
			err = admin(t, env, "", nil, "token", "create", "--project", "999", "--duration-minutes", "5")
			if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "not found") {
				t.Errorf("token create for unknown project = %v", err)
			}
		})
	}
}

func TestAdminCLIUsageErrors(t *testing.T) {
	t.Parallel()
	// No database is opened for a usage error: the environment is unusable on purpose.
	env := map[string]string{"DB_DRIVER": "nope"}
	for _, args := range [][]string{
		{"project"},
		{"project", "delete"},
		{"token", "frobnicate"},
		{"project", "create", "--name", "x"},
		{"project", "create", "--api-key", "k"},
		{"project", "create", "--name", "x", "--api-key", "k", "extra"},
		{"project", "list", "--all"},
		{"token", "create", "--project", "1"},
		{"token", "create", "--duration-minutes", "5"},
		{"token", "create", "--project", "abc", "--duration-minutes", "5"},
		{"token", "create", "--project", "1", "--duration-minutes", "five"},
		{"token", "list", "--project", "0"},
		{"token", "revoke"},
		{"token", "revoke", "x"},
		{"token", "revoke", "1", "2"},
	} {
		if err := admin(t, env, "", nil, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v = %v, want a usage error", args, err)
		}
	}
	var help bytes.Buffer
	if err := runAdmin(t.Context(), "token", []string{"--help"}, func(string) string { return "" }, nil, &help, io.Discard); err != nil || !strings.Contains(help.String(), "llmproxy token revoke ID") {
		t.Errorf("token --help = %v\n%s", err, help.String())
	}
	// Bad input that passes the flags is refused by manage, naming the problem.
	err := admin(t, map[string]string{"DATABASE_PATH": t.TempDir() + "/db"}, "", nil, "token", "create", "--project", "1", "--duration-minutes", "0")
	if err == nil || !strings.Contains(err.Error(), "duration_minutes") {
		t.Errorf("token create --duration-minutes 0 = %v", err)
	}
	err = admin(t, env, "", nil, "project", "list")
	if err == nil || !strings.HasPrefix(err.Error(), "DB_DRIVER") {
		t.Errorf("project list with DB_DRIVER=nope = %v", err)
	}
}
