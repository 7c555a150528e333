"""The admin console: server-rendered pages at `/` whose forms call the REST API."""
