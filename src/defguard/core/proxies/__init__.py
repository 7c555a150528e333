"""Edges (called proxies in the REST API) and each Core's link to them."""
