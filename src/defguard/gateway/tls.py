"""Server credentials for the Gateway's gRPC port.

No certificate: plain gRPC (for loopback and tests). Certificate and key: TLS,
so Cores can verify the Gateway. A CA as well: mutual TLS, where the Gateway
only accepts Cores that present a certificate signed by that CA; since Cores
push secrets (the interface private key) and decide who gets into the VPN,
this is the production setting.
"""

from __future__ import annotations

from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    pass


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        raise TlsConfigError(f"{what} {path} is not PEM")
    return data


def server_credentials(
    cert: Path | None, key: Path | None, ca: Path | None, *, env: str = "DEFGUARD_GRPC"
) -> grpc.ServerCredentials | None:
    """Credentials for `add_secure_port`, or None for a plain port.

    `env` is the prefix of the settings' variable names, for the error messages
    (the Edge's are `DEFGUARD_PROXY_GRPC_*`).
    """
    if cert is None and key is None:
        if ca is not None:
            raise TlsConfigError(
                f"{env}_CA needs {env}_CERT and {env}_KEY: "
                "mutual TLS is TLS with client certificates"
            )
        return None
    if cert is None or key is None:
        raise TlsConfigError(f"set both {env}_CERT and {env}_KEY, or neither")
    chain = _read(cert, "certificate")
    private = _read(key, "private key")
    root = _read(ca, "CA certificate") if ca is not None else None
    return grpc.ssl_server_credentials(
        [(private, chain)], root_certificates=root, require_client_auth=root is not None
    )
