//go:build linux

package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/llmproxy/llmproxy/internal/pgtest"
	"github.com/llmproxy/llmproxy/internal/secrets"
	"github.com/llmproxy/llmproxy/internal/upstreamtest"
)

// smallDisk mounts an 8 MiB tmpfs on a new directory that every user can
// enter (the Postgres server runs as postgres) and returns it. A test that
// cannot mount, for want of the privilege, is skipped and says why.
func smallDisk(t *testing.T) string {
	t.Helper()
	// Not t.TempDir: its parent is private to the user running the test.
	dir, err := os.MkdirTemp("", "llmproxy-small-disk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8m,mode=0755"); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (%v): the disk-full fault needs the privilege to mount", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes the file until its file system has no space left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// A full disk (SQLITE_FULL): writes get 503 database_unavailable and a log
// line saying the disk is full, nothing is corrupted, and once space is
// freed the service works again and writes the usage it had queued.
func TestServeSQLiteDiskFull(t *testing.T) {
	t.Parallel()
	dir := smallDisk(t)
	upstream := upstreamtest.New(t, upstreamtest.Options{})
	path := filepath.Join(dir, "llmproxy.db")
	s := startServe(t, map[string]string{"DATABASE_PATH": path, "ENCRYPTION_KEY": secrets.NewKey(), "UPSTREAM_URL": upstream.URL})
	admin := s.admin
	tokenID, secret := newProjectToken(t, s.url, admin)
	client := &http.Client{Timeout: faultClientTimeout}
	chat := func() answer { return ask(client, "POST", s.url+"/v1/chat/completions", secret, chatBody) }
	if a := chat(); !a.ok() {
		t.Fatalf("before the disk is full: %v", a)
	}

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// The first writes may still fit in space SQLite already has; a bounded
	// number of them must run into the full disk.
	const attempts = 200
	ok, refused := 1, 0
	for range attempts {
		a := chat()
		if a.ok() {
			ok++
			continue
		}
		if !a.proxyUnavailable() {
			t.Fatalf("POST /v1/chat/completions on a full disk = %v, want 200 or 503 database_unavailable", a)
		}
		refused++
		break
	}
	if refused == 0 {
		t.Fatalf("%d requests on a full disk all succeeded", attempts)
	}
	if a := ask(client, "POST", s.url+"/manage/projects", admin, `{"name":"full","api_key":"sk-full"}`); !a.manageUnavailable() {
		t.Errorf("POST /manage/projects on a full disk = %v, want 503 database_unavailable", a)
	}
	checkLogLine(t, s.stderr.String(), `"msg":"proxy: database unavailable"`, "database or disk is full")
	checkLogLine(t, s.stderr.String(), `"path":"/manage/projects"`, "database or disk is full")

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if a := chat(); !a.ok() {
		t.Fatalf("after space is freed: %v", a)
	}
	ok++
	if got := settledRequestCount(t, s.url, admin, tokenID, func(n int) bool { return n == ok }); got != ok {
		t.Errorf("request_count = %d, want %d", got, ok)
	}
	s.stop()
	if err := s.wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, s.stderr)
	}
	if got := usageRequests(t, s.env); got != int64(ok) {
		t.Errorf("usage rows = %d, want %d", got, ok)
	}
	checkIntegrity(t, path)
}

// A full disk under PostgreSQL (SQLSTATE 53100): writes that need space get
// 503 database_unavailable, not a 500, with the server's message in the
// log; usage that cannot be written waits; once space is freed everything
// works again and the queued usage is written. The database lives in a
// tablespace on a small disk (the server's WAL does not, as in practice a
// full WAL disk stops the server, which is a restart).
func TestServePostgresDiskFull(t *testing.T) {
	t.Parallel()
	dir := smallDisk(t) // first, so that the server stops before it is unmounted
	cluster := pgtest.NewCluster(t)
	tablespace := filepath.Join(dir, "tablespace")
	if err := os.Mkdir(tablespace, 0o700); err != nil {
		t.Fatal(err)
	}
	owner, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("the tablespace needs the server's user: %v", err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	if err := os.Chown(tablespace, uid, gid); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"CREATE TABLESPACE small LOCATION '" + tablespace + "'",
		"CREATE DATABASE llmproxy TABLESPACE small",
	} {
		if _, err := conn.Exec(t.Context(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(t.Context())

	upstream := upstreamtest.New(t, upstreamtest.Options{})
	s := startServe(t, map[string]string{
		"DB_DRIVER":      "postgres",
		"DATABASE_URL":   cluster.URL("llmproxy"),
		"ENCRYPTION_KEY": secrets.NewKey(),
		"UPSTREAM_URL":   upstream.URL,
	})
	admin := s.admin
	tokenID, secret := newProjectToken(t, s.url, admin)
	client := &http.Client{Timeout: faultClientTimeout}
	chat := func() answer { return ask(client, "POST", s.url+"/v1/chat/completions", secret, chatBody) }

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// Updates may fit in pages the tables have; inserts soon need new ones.
	// Admissions (updates) go on, usage (inserts) waits in the recorder.
	const attempts = 200
	ok, refused := 0, 0
	for i := range attempts {
		switch a := chat(); {
		case a.ok():
			ok++
		case !a.proxyUnavailable():
			t.Fatalf("POST /v1/chat/completions on a full disk = %v, want 200 or 503 database_unavailable", a)
		}
		a := ask(client, "POST", s.url+"/manage/projects", admin, fmt.Sprintf(`{"name":"full-%d","api_key":"sk-full"}`, i))
		if a.status == http.StatusCreated {
			continue
		}
		if !a.manageUnavailable() {
			t.Fatalf("POST /manage/projects on a full disk = %v, want 201 or 503 database_unavailable", a)
		}
		refused++
		break
	}
	if refused == 0 {
		t.Fatalf("%d project creations on a full disk all succeeded", attempts)
	}
	checkLogLine(t, s.stderr.String(), `"path":"/manage/projects"`, "No space left on device")
	if ok > 0 {
		// The first usage batch needs the table's first page.
		waitForLog(t, s.stderr, `"msg":"usage: writing a batch failed, will retry"`)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if a := ask(client, "POST", s.url+"/manage/projects", admin, `{"name":"space-freed","api_key":"sk-freed"}`); a.status != http.StatusCreated {
		t.Fatalf("POST /manage/projects after space is freed = %v", a)
	}
	if a := chat(); !a.ok() {
		t.Fatalf("after space is freed: %v", a)
	}
	ok++
	if got := settledRequestCount(t, s.url, admin, tokenID, func(n int) bool { return n == ok }); got != ok {
		t.Errorf("request_count = %d, want %d", got, ok)
	}
	s.stop()
	if err := s.wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, s.stderr)
	}
	if got := usageRequests(t, s.env); got != int64(ok) {
		t.Errorf("usage rows = %d, want %d", got, ok)
	}
}
