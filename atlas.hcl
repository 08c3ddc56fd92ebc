// Atlas project file. `llmproxy migrate diff <name>` reads the env blocks
// below (src, dev, migration.dir), so the atlas CLI is optional; its users
// can run `atlas migrate diff <name> --env sqlite` with the same file.

env "sqlite" {
  src = "file://schema/sqlite/schema.sql"
  dev = "sqlite://dev?mode=memory"
  migration {
    dir = "file://schema/sqlite/migrations"
  }
}

env "postgres" {
  src = "file://schema/postgres/schema.sql"
  // A Postgres server for planning. llmproxy creates a scratch database on
  // it and drops it afterwards; the atlas CLI uses the named database, which
  // must be empty. Set ATLAS_DEV_URL to use another server.
  dev = getenv("ATLAS_DEV_URL") != "" ? getenv("ATLAS_DEV_URL") : "postgres://postgres@127.0.0.1:5432/postgres?search_path=public&sslmode=disable"
  migration {
    dir = "file://schema/postgres/migrations"
  }
}
