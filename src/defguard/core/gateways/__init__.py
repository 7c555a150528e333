"""Gateways: registration per location, link state, configuration push and stats."""
