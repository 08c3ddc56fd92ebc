// Command llmproxy is the OpenAI-compatible proxy: `llmproxy serve` runs it,
// the other subcommands operate on its database.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/llmproxy/llmproxy/service"
	_ "github.com/llmproxy/llmproxy/service/pgstore"
	_ "github.com/llmproxy/llmproxy/service/sqlitestore"
)

const usage = `llmproxy: an OpenAI-compatible LLM API proxy

Usage:
  llmproxy serve                 run the proxy (configuration from the environment; see serve --help)
  llmproxy migrate <command>     apply|status|diff <name>|lint (see migrate --help)

Storage: DB_DRIVER=sqlite (default, DATABASE_PATH=./data/llmproxy.db) or
DB_DRIVER=postgres with DATABASE_URL.
`

// errUsage marks bad command-line use: the message is printed with the usage hint.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "llmproxy: %v\n", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, "\n"+usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: missing command", errUsage)
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// openStore opens the configured store; SkipMigrate is for commands that
// inspect or migrate the database themselves.
func openStore(ctx context.Context, skipMigrate bool) (service.Store, service.Config, error) {
	cfg, err := service.ConfigFromEnv(os.Getenv)
	if err != nil {
		return nil, cfg, err
	}
	cfg.SkipMigrate = skipMigrate
	store, err := service.Open(ctx, cfg)
	return store, cfg, err
}
