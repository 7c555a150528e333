"""The SQL text of earlier revisions, for later ones that restore or amend it.

A revision that rewrites an SQL function must give the previous definition
back on downgrade. Reading it from the revision that wrote it keeps one copy
of each definition instead of a second, drifting one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_VERSIONS = Path(__file__).with_name("versions")


def revision_sql(revision: str) -> str:
    """The module-level `SQL` of revision file `versions/<revision>.py`."""
    spec = importlib.util.spec_from_file_location(
        f"defguard_revision_{revision}", _VERSIONS / f"{revision}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sql: str = module.SQL
    return sql


def function_sql(revision: str, name: str) -> str:
    """`CREATE FUNCTION <name>(...) ... $$;` as written in that revision."""
    sql = revision_sql(revision)
    start = sql.index(f"CREATE FUNCTION {name}(")
    return sql[start : sql.index("$$;", start) + len("$$;")]
