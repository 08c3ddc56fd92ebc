package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Cluster is a throwaway PostgreSQL cluster run from the installed binaries
// (initdb, pg_ctl), for machines without a server and for tests that stop
// and restart the server.
type Cluster struct {
	Dir  string
	Port int
	bin  string
}

// StartCluster initialises and starts a cluster in dir on port. As root it
// runs the server as the postgres user, which PostgreSQL requires.
func StartCluster(dir string, port int) (*Cluster, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Port: port, bin: bin}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := chownToPostgres(dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		if err := c.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "-A", "trust", "--no-sync"); err != nil {
			return nil, err
		}
	}
	return c, c.Start()
}

// URL is the connection URL of database name on this cluster.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, name)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300", c.Port, c.Dir)
	return c.run("pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-l", filepath.Join(c.Dir, "log"), "-o", opts, "-w", "-t", "60", "start")
}

// Stop stops the server at once, dropping connections.
func (c *Cluster) Stop() error {
	return c.run("pg_ctl", "-D", filepath.Join(c.Dir, "data"), "-m", "immediate", "-w", "stop")
}

func (c *Cluster) run(tool string, args ...string) error {
	cmd := exec.Command(filepath.Join(c.bin, tool), args...)
	if os.Geteuid() == 0 {
		uid, gid, err := postgresUser()
		if err != nil {
			return err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	cmd.Dir = c.Dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", tool, err, out)
	}
	return nil
}

// sharedCluster starts, or reuses, one cluster per machine for test
// processes that find no server: a file lock keeps concurrent packages from
// racing, and the cluster is left running for the next package.
func sharedCluster() (*Cluster, error) {
	dir := filepath.Join(os.TempDir(), "llmproxy-pgtest-"+strconv.Itoa(os.Getuid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	const port = 55432
	c := &Cluster{Dir: filepath.Join(dir, "cluster"), Port: port}
	if portOpen(port) && ping(c.URL("postgres")) == nil {
		return c, nil
	}
	return StartCluster(c.Dir, port)
}

func portOpen(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("initdb not found: install PostgreSQL")
}

func postgresUser() (uid, gid uint32, err error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("running as root needs a postgres user: %w", err)
	}
	id, _ := strconv.Atoi(u.Uid)
	g, _ := strconv.Atoi(u.Gid)
	return uint32(id), uint32(g), nil
}

func chownToPostgres(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, err := postgresUser()
	if err != nil {
		return err
	}
	return os.Chown(dir, int(uid), int(gid))
}

// NewCluster starts a throwaway cluster for this test alone on a free port,
// stopped and removed at the end. (t.TempDir is not used: its parent is
// private to root, and the server runs as postgres.)
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "llmproxy-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c, err := StartCluster(dir, port)
	if err != nil {
		os.RemoveAll(dir)
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: throwaway cluster: %v", err)
		}
		t.Skipf("pgtest: throwaway cluster: %v", err)
	}
	t.Cleanup(func() {
		c.Stop()
		os.RemoveAll(dir)
	})
	return c
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
