package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/llmproxy/llmproxy/internal/config"
	"github.com/llmproxy/llmproxy/internal/manage"
)

const adminHelp = `Usage:
  llmproxy project create --name NAME --api-key KEY
  llmproxy project list
  llmproxy token create --project ID --duration-minutes M [--max-requests N]
  llmproxy token list [--project ID]
  llmproxy token revoke ID

These work on the configured database directly (DB_DRIVER, DATABASE_PATH,
DATABASE_URL, ENCRYPTION_KEY: the same environment as serve; see serve --help)
and print JSON in the management API's shapes. --api-key - reads the key from
stdin, keeping it out of the process list and shell history. A token's secret
is printed only by token create. Changes are audited with actor "cli".
`

// cliActor is the audit actor of changes made from the command line.
const cliActor = "cli"

// runAdmin runs `project ...` or `token ...` (noun) against the local database.
func runAdmin(ctx context.Context, noun string, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: %s: missing command", errUsage, noun)
	}
	verb, args := args[0], args[1:]
	name := noun + " " + verb
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	var run func(ctx context.Context, m *manage.Manager) (any, error)
	var required []string // flags without a usable default
	wantArgs := 0
	var revokeID int64 // token revoke's argument
	switch name {
	case "project create":
		projectName := fs.String("name", "", "project name")
		apiKey := fs.String("api-key", "", "upstream API key, or - to read it from stdin")
		run = func(ctx context.Context, m *manage.Manager) (any, error) {
			key := *apiKey
			if key == "-" {
				var err error
				if key, err = readLine(stdin); err != nil {
					return nil, fmt.Errorf("read the API key from stdin: %w", err)
				}
			}
			p, err := m.CreateProject(ctx, cliActor, manage.ProjectInput{Name: *projectName, APIKey: key})
			if err != nil {
				return nil, err
			}
			return manage.NewProjectView(p), nil
		}
		required = []string{"name", "api-key"}
	case "project list":
		run = func(ctx context.Context, m *manage.Manager) (any, error) {
			projects, err := m.Projects(ctx)
			return manage.Map(projects, manage.NewProjectView), err
		}
	case "token create":
		var project idFlag
		fs.Var(&project, "project", "project id")
		duration := fs.Int64("duration-minutes", 0, "lifetime in minutes (1..525600)")
		maxRequests := fs.Int64("max-requests", 0, "request limit; 0 means unlimited")
		run = func(ctx context.Context, m *manage.Manager) (any, error) {
			created, err := m.CreateToken(ctx, cliActor, manage.TokenInput{ProjectID: int64(project), DurationMinutes: *duration, MaxRequests: *maxRequests})
			if err != nil {
				return nil, err
			}
			return manage.NewCreatedTokenView(created), nil
		}
		required = []string{"project", "duration-minutes"}
	case "token list":
		var project idFlag
		fs.Var(&project, "project", "only this project's tokens")
		run = func(ctx context.Context, m *manage.Manager) (any, error) {
			var projectID *int64
			if project != 0 {
				projectID = (*int64)(&project)
			}
			tokens, err := m.Tokens(ctx, projectID)
			return manage.Map(tokens, manage.NewTokenView), err
		}
	case "token revoke":
		wantArgs = 1
		run = func(ctx context.Context, m *manage.Manager) (any, error) {
			if err := m.RevokeToken(ctx, cliActor, revokeID); err != nil {
				return nil, err
			}
			t, err := m.Token(ctx, revokeID)
			if err != nil {
				return nil, err
			}
			return manage.NewTokenView(t), nil
		}
	case noun + " help", noun + " -h", noun + " -help", noun + " --help":
		fmt.Fprint(stdout, adminHelp)
		return nil
	default:
		return fmt.Errorf("%w: %s: unknown command %q", errUsage, noun, verb)
	}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, adminHelp)
			return nil
		}
		return fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	if fs.NArg() != wantArgs {
		return fmt.Errorf("%w: %s: want %d argument(s), got %q", errUsage, name, wantArgs, fs.Args())
	}
	if name == "token revoke" {
		var err error
		if revokeID, err = manage.ParseID(fs.Arg(0)); err != nil {
			return fmt.Errorf("%w: %s: token id %v", errUsage, name, err)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, flagName := range required {
		if !set[flagName] {
			return fmt.Errorf("%w: %s: --%s is required", errUsage, name, flagName)
		}
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	if cfg.KeyFileCreated {
		fmt.Fprintf(stderr, "llmproxy: ENCRYPTION_KEY is not set: created the key file %s; back it up\n", cfg.KeyFile)
	}
	store, err := openStore(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	defer store.Close()
	out, err := run(ctx, manage.New(store, cfg.Keys, nil))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// idFlag is an id flag, checked as the flags are parsed.
type idFlag int64

func (f *idFlag) String() string { return manage.FormatID(int64(*f)) }

func (f *idFlag) Set(s string) error {
	id, err := manage.ParseID(s)
	*f = idFlag(id)
	return err
}

// readLine reads one line, without its line ending.
func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
