// Package deploy_test checks the container files at the repository root
// without a Docker engine: docker-compose.yml is loaded with the loader
// `docker compose` itself uses, and the Dockerfile's build stage is run
// here (dockerfile_test.go).
package deploy_test

import (
	"context"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/llmproxy/llmproxy/service"
)

// repoRoot is where the Dockerfile and docker-compose.yml live.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// loadCompose loads docker-compose.yml as `docker compose --profile ...`
// would, with env as the only environment (no OS variables, no .env file).
func loadCompose(t *testing.T, env map[string]string, profiles ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(envList),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load (profiles %v): %v", profiles, err)
	}
	return project
}

func serviceNames(s types.Services) []string {
	names := make([]string, 0, len(s))
	for name := range s {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// environment returns a service's variables as a getenv function; a
// variable without a value reads as unset.
func environment(svc types.ServiceConfig) func(string) string {
	return func(name string) string {
		if v := svc.Environment[name]; v != nil {
			return *v
		}
		return ""
	}
}

// checkLLMProxy checks what every llmproxy service needs: the image built
// from the Dockerfile, the container port published, a storage
// configuration llmproxy accepts, and the secrets passed through.
func checkLLMProxy(t *testing.T, root string, svc types.ServiceConfig, driver string, env map[string]string) service.Config {
	t.Helper()
	if svc.Build == nil || svc.Build.Context != root || svc.Image == "" {
		t.Errorf("%s: want build from the repository root and an image name, got build %+v image %q", svc.Name, svc.Build, svc.Image)
	}
	if len(svc.Ports) != 1 || svc.Ports[0].Target != 8080 || svc.Ports[0].Published == "" {
		t.Errorf("%s: want container port 8080 published, got %+v", svc.Name, svc.Ports)
	}
	getenv := environment(svc)
	cfg, err := service.ConfigFromEnv(getenv)
	if err != nil {
		t.Errorf("%s: llmproxy rejects its storage configuration: %v", svc.Name, err)
	}
	if cfg.Driver != driver {
		t.Errorf("%s: driver %q, want %q", svc.Name, cfg.Driver, driver)
	}
	for _, name := range []string{"MANAGEMENT_TOKEN", "ENCRYPTION_KEY"} {
		if _, set := svc.Environment[name]; !set || getenv(name) != env[name] {
			t.Errorf("%s: %s=%q, want %q from the environment", svc.Name, name, getenv(name), env[name])
		}
	}
	return cfg
}

func TestComposeDefaultIsSQLiteInAVolume(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	// Nothing set: the default must start without any variable or .env file.
	project := loadCompose(t, nil)

	if got := serviceNames(project.Services); !slices.Equal(got, []string{"llmproxy"}) {
		t.Fatalf("services without a profile: %v, want [llmproxy]", got)
	}
	if got := serviceNames(project.DisabledServices); !slices.Equal(got, []string{"llmproxy-postgres", "postgres"}) {
		t.Errorf("services left to --profile postgres: %v", got)
	}
	svc := project.Services["llmproxy"]
	cfg := checkLLMProxy(t, root, svc, service.DriverSQLite, nil)
	if len(svc.Volumes) != 1 {
		t.Fatalf("llmproxy volumes: %+v, want one named volume", svc.Volumes)
	}
	vol := svc.Volumes[0]
	if vol.Type != types.VolumeTypeVolume || project.Volumes[vol.Source].Name == "" {
		t.Errorf("llmproxy volume %+v: want a named volume declared at the top level", vol)
	}
	if !strings.HasPrefix(cfg.SQLitePath, vol.Target+"/") {
		t.Errorf("DATABASE_PATH=%q is outside the volume mounted at %s: the database would be lost with the container", cfg.SQLitePath, vol.Target)
	}
}

func TestComposePostgresProfile(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	env := map[string]string{
		"MANAGEMENT_TOKEN":  "management-secret",
		"ENCRYPTION_KEY":    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"POSTGRES_PASSWORD": "pg-secret",
	}
	project := loadCompose(t, env, "postgres")

	if got := serviceNames(project.Services); !slices.Equal(got, []string{"llmproxy", "llmproxy-postgres", "postgres"}) {
		t.Fatalf("services with --profile postgres: %v", got)
	}
	checkLLMProxy(t, root, project.Services["llmproxy"], service.DriverSQLite, env)

	pg := project.Services["postgres"]
	if pg.Image != "postgres:15" || !slices.Contains(pg.Profiles, "postgres") {
		t.Errorf("postgres: image %q profiles %v, want postgres:15 in profile postgres", pg.Image, pg.Profiles)
	}
	if hc := pg.HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] != "CMD" || hc.Test[1] != "pg_isready" {
		t.Errorf("postgres: health check %+v, want CMD pg_isready", hc)
	}
	if len(pg.Volumes) != 1 || pg.Volumes[0].Type != types.VolumeTypeVolume || pg.Volumes[0].Target != "/var/lib/postgresql/data" {
		t.Errorf("postgres: volumes %+v, want a named volume on /var/lib/postgresql/data", pg.Volumes)
	}

	app := project.Services["llmproxy-postgres"]
	if !slices.Contains(app.Profiles, "postgres") {
		t.Errorf("llmproxy-postgres: profiles %v, want postgres", app.Profiles)
	}
	if dep, ok := app.DependsOn["postgres"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("llmproxy-postgres: depends_on %+v, want postgres with condition service_healthy", app.DependsOn)
	}
	cfg := checkLLMProxy(t, root, app, service.DriverPostgres, env)
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	pgEnv := environment(pg)
	password, _ := u.User.Password()
	if u.Hostname() != "postgres" || u.Port() != "5432" || u.User.Username() != pgEnv("POSTGRES_USER") ||
		password != env["POSTGRES_PASSWORD"] || pgEnv("POSTGRES_PASSWORD") != env["POSTGRES_PASSWORD"] ||
		strings.TrimPrefix(u.Path, "/") != pgEnv("POSTGRES_DB") {
		t.Errorf("DATABASE_URL %s does not reach the postgres service (user %q, database %q)",
			u.Redacted(), pgEnv("POSTGRES_USER"), pgEnv("POSTGRES_DB"))
	}

	// Both proxies run side by side under the profile, so their host ports differ.
	published := map[string]string{}
	for _, name := range []string{"llmproxy", "llmproxy-postgres"} {
		for _, p := range project.Services[name].Ports {
			if other, dup := published[p.Published]; dup {
				t.Errorf("%s and %s both publish host port %s", other, name, p.Published)
			}
			published[p.Published] = name
		}
	}
}
