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

	_ "github.com/llmproxy/llmproxy/service/sqlitestore"
)

const mainUsage = `llmproxy: an OpenAI-compatible LLM API proxy

Usage:
  llmproxy serve                 run the proxy (configuration from the environment; see serve --help)
  llmproxy migrate <command>     apply|status|diff <name>|lint (see migrate --help)
  llmproxy project <command>     create|list projects in the configured database (see project --help)
  llmproxy token <command>       create|list|revoke tokens in the configured database (see token --help)
  llmproxy db <command>          copy|backup|export|import the database's rows (see db --help)

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
			fmt.Fprint(os.Stderr, "\n"+mainUsage)
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
	case "project", "token":
		return runAdmin(ctx, args[0], args[1:], os.Getenv, os.Stdin, stdout, stderr)
	case "db":
		return runDB(ctx, args[1:], os.Getenv, os.Stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, mainUsage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}
