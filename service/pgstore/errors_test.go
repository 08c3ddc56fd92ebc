package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/service"
	"github.com/llmproxy/llmproxy/service/pgstore"
)

var sentinels = []error{
	service.ErrNotFound, service.ErrConflict, service.ErrReference, service.ErrInvalid, service.ErrUnavailable,
}

// TestMapError feeds the mapper errors provoked on a real server, through
// the store where a Store method can provoke them and through plain SQL
// where none can.
func TestMapError(t *testing.T) {
	t.Parallel()
	url := migratedDatabase(t)
	s := openStore(t, url)
	ctx := t.Context()
	project, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "taken", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
	if err != nil {
		t.Fatal(err)
	}
	token, err := s.TokenCreate(ctx, &service.TokenCreateParams{
		ProjectID: project.ID, SecretHash: []byte("hash"), TokenPrefix: "sk-a", ExpiresAt: time.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)

	cases := []struct {
		name       string
		provoke    func(t *testing.T) error
		want       error // nil: no sentinel applies
		constraint string
	}{
		{
			name: "UniqueProjectName",
			provoke: func(t *testing.T) error {
				_, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "taken", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
				return err
			},
			want: service.ErrConflict, constraint: "projects_name_key",
		},
		{
			name: "UniqueSecretHash",
			provoke: func(t *testing.T) error {
				_, err := s.TokenCreate(ctx, &service.TokenCreateParams{
					ProjectID: project.ID, SecretHash: token.SecretHash, TokenPrefix: "sk-b", ExpiresAt: time.Now().Add(time.Hour),
				})
				return err
			},
			want: service.ErrConflict, constraint: "tokens_secret_hash_key",
		},
		{
			name: "ForeignKey",
			provoke: func(t *testing.T) error {
				return pgstore.MapError(rawExec(t, url,
					`INSERT INTO tokens (project_id, secret_hash, token_prefix, expires_at) VALUES (999999, '\x01', 'sk-c', now())`))
			},
			want: service.ErrReference, constraint: "tokens_project_id_fkey",
		},
		{
			name: "CheckEmptyName",
			provoke: func(t *testing.T) error {
				_, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
				return err
			},
			want: service.ErrInvalid, constraint: "projects_name_not_empty",
		},
		{
			name: "CheckMaxRequests",
			provoke: func(t *testing.T) error {
				_, err := s.TokenUpdate(ctx, &service.TokenUpdateParams{ID: token.ID, SetMaxRequests: true, MaxRequests: &zero})
				return err
			},
			want: service.ErrInvalid, constraint: "tokens_max_requests_positive",
		},
		{
			name: "NotNull",
			provoke: func(t *testing.T) error {
				return pgstore.MapError(rawExec(t, url,
					`INSERT INTO projects (name, api_key_ciphertext, api_key_hint) VALUES (NULL, '\x01', 'h')`))
			},
			want: service.ErrInvalid,
		},
		{
			name: "MalformedJSON",
			provoke: func(t *testing.T) error {
				_, err := s.AuditInsert(ctx, &service.AuditInsertParams{Actor: "a", Action: "b", Result: "c", Details: json.RawMessage(`{"x":`)})
				return err
			},
			want: service.ErrInvalid,
		},
		{
			name: "NoRows",
			provoke: func(t *testing.T) error {
				_, err := s.ProjectGetByID(ctx, 999999)
				if !errors.Is(err, pgx.ErrNoRows) {
					t.Errorf("error = %v, want the driver's cause kept", err)
				}
				return err
			},
			want: service.ErrNotFound,
		},
		{
			// Raised as the server raises it when a table cannot grow; a real
			// full disk is cmd/llmproxy's TestServePostgresDiskFull.
			name: "DiskFull",
			provoke: func(t *testing.T) error {
				return pgstore.MapError(rawExec(t, url,
					`DO $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$`))
			},
			want: service.ErrUnavailable,
		},
		{
			// What a write gets from a server that became a read-only
			// standby (a failover in progress).
			name: "ReadOnlyServer",
			provoke: func(t *testing.T) error {
				return pgstore.MapError(rawExec(t, url,
					`BEGIN TRANSACTION READ ONLY; INSERT INTO audit_events (actor, action, result) VALUES ('a', 'b', 'c'); COMMIT`))
			},
			want: service.ErrUnavailable,
		},
		{
			name: "Unrecognised",
			provoke: func(t *testing.T) error {
				return pgstore.MapError(rawExec(t, url, `SELECT * FROM no_such_table`))
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := c.provoke(t)
			if err == nil {
				t.Fatal("no error provoked")
			}
			var pgErr *pgconn.PgError
			if c.want != service.ErrNotFound && !errors.As(err, &pgErr) {
				t.Errorf("error = %v, want the server's error kept as the cause", err)
			}
			for _, sentinel := range sentinels {
				if got := errors.Is(err, sentinel); got != (sentinel == c.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, sentinel, got)
				}
			}
			if c.constraint != "" && (pgErr == nil || pgErr.ConstraintName != c.constraint || !strings.Contains(err.Error(), c.constraint)) {
				t.Errorf("error = %v, want it to name constraint %s", err, c.constraint)
			}
		})
	}
}

func TestMapErrorPassesThroughNilAndContextErrors(t *testing.T) {
	t.Parallel()
	if err := pgstore.MapError(nil); err != nil {
		t.Fatalf("MapError(nil) = %v", err)
	}
	s := openStore(t, migratedDatabase(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.ProjectList(ctx, &service.ProjectListParams{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	for _, sentinel := range sentinels {
		if errors.Is(err, sentinel) {
			t.Errorf("a cancelled call reports %v", sentinel)
		}
	}
}

// TestMapErrorServerDown stops the server under an open store: calls fail
// with ErrUnavailable, and the same store works again once it is back.
func TestMapErrorServerDown(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	s := openStore(t, cluster.URL("postgres"))
	ctx := t.Context()
	project, err := s.ProjectCreate(ctx, &service.ProjectCreateParams{Name: "p", APIKeyCiphertext: []byte{1}, APIKeyHint: "h"})
	if err != nil {
		t.Fatal(err)
	}

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ProjectGetByID(ctx, project.ID); !errors.Is(err, service.ErrUnavailable) {
		t.Errorf("ProjectGetByID with the server down: error = %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, service.ErrUnavailable) {
		t.Errorf("Ping with the server down: error = %v, want ErrUnavailable", err)
	}

	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ProjectGetByID(ctx, project.ID); err != nil {
		t.Errorf("ProjectGetByID after the server came back: %v", err)
	}
}

// rawExec runs sql on its own connection and returns the driver's error as is.
func rawExec(t *testing.T, url, sql string) error {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(t.Context(), sql)
	return err
}
