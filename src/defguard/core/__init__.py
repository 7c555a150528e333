"""Core: the control plane (admin REST API, PostgreSQL, gRPC client of Edges and Gateways)."""
