"""PostgreSQL access: engine, embedded server, migrations."""
