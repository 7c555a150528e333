"""What passes for an e-mail address wherever one is configured or typed in.

Deliberately loose (a local part, `@`, a domain of DNS labels): the SMTP server
is the real judge, this only catches values that cannot be an address at all,
such as a display name or a missing domain.
"""

from __future__ import annotations

import re

_ADDRESS = re.compile(
    r"[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*",
    re.ASCII,
)
MAX_LENGTH = 254


def is_email_address(value: str) -> bool:
    return len(value) <= MAX_LENGTH and _ADDRESS.fullmatch(value) is not None
