"""Imports every feature's Edge handlers so that `dispatch` knows all operations."""

import defguard.core.enrollment.edge  # enrollment, password reset
import defguard.core.enrollment.poll  # poll
import defguard.core.vpn_sessions.edge  # noqa: F401 - client-mfa/start and finish
from defguard.core.edge_requests.dispatch import dispatch

__all__ = ["dispatch"]
