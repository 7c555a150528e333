"""The committed protobuf modules are exactly what `scripts/gen-proto` produces from the .proto files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PROTOS = ["common", "gateway", "edge"]


def test_generated_modules_are_up_to_date(tmp_path):
    (tmp_path / "defguard" / "proto").mkdir(parents=True)
    for name in PROTOS:
        shutil.copy(SRC / "defguard" / "proto" / f"{name}.proto", tmp_path / "defguard" / "proto")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            *[f"defguard/proto/{n}.proto" for n in PROTOS],
        ],
        cwd=tmp_path,
        check=True,
    )
    stale = []
    for name in PROTOS:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            fresh = (tmp_path / "defguard" / "proto" / f"{name}{suffix}").read_text()
            committed = (SRC / "defguard" / "proto" / f"{name}{suffix}").read_text()
            if fresh != committed:
                stale.append(f"{name}{suffix}")
    assert not stale, f"regenerate with scripts/gen-proto: {stale}"
