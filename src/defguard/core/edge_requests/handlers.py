"""Imports every feature's Edge handlers so that `dispatch` knows all operations."""

from defguard.core.edge_requests.dispatch import dispatch

__all__ = ["dispatch"]
