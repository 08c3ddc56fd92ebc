GO   ?= go
SQLC  = $(GO) tool -modfile=tools/go.mod sqlc

.PHONY: generate check test build bench loadtest

# Regenerate the sqlc packages and check that the migrations match schema.sql.
generate:
	$(SQLC) generate
	$(SQLC) vet
	$(GO) run ./cmd/llmproxy migrate diff --check

# Fails on stale generated code or migrations, drift, lint findings, vet or gofmt.
check: generate
	@test -z "$$(git status --porcelain -- gen schema queries sqlc.yaml)" || \
		{ echo "generated code or migrations are stale; run make generate and commit:"; git status --porcelain -- gen schema queries sqlc.yaml; git diff --stat -- gen schema; exit 1; }
	$(GO) run ./cmd/llmproxy migrate lint
	$(GO) test -count=1 -run 'Drift' ./migrate/
	$(GO) vet ./...
	$(GO) vet -tags nopostgres ./cmd/llmproxy ./migrate
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test:
	$(GO) test -race -count=1 ./...

build:
	$(GO) build -o bin/llmproxy ./cmd/llmproxy

# Data-layer benchmarks on both backends; figures go into docs/performance.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./service/sqlitestore/ ./service/pgstore/

# Load test: llmproxy against a fake upstream on loopback, both backends, with
# correctness checks; figures go into docs/performance.md. Flags: LOADTEST_FLAGS.
loadtest:
	$(GO) run ./cmd/llmproxy-bench $(LOADTEST_FLAGS)
