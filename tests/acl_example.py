"""The firewall that ../shared/spec/acl.md's worked example compiles to, as the preview shows it.

Two tests expect it: the pure compiler's, and the API preview's on a real database.
"""

from __future__ import annotations

from typing import Any

SPEC_EXAMPLE_FIREWALL: dict[str, Any] = {
    "default_policy": "deny",
    "rules": [
        {
            "id": 1,
            "verdict": "allow",
            "ip_version": 4,
            "sources": ["10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.2.2"],
            "destinations": ["10.0.5.5", "192.168.1.0/24"],
            "ports": [80, 443],
            "protocols": [6],
            "comment": "RULE 1 - web ALLOW",
        },
        {
            "id": 2,
            "verdict": "deny",
            "ip_version": 4,
            "sources": [],
            "destinations": ["10.0.5.5", "192.168.1.0/24"],
            "ports": [],
            "protocols": [],
            "comment": "RULE 1 - web DENY",
        },
    ],
}
