"""Defguard: an identity-aware WireGuard VPN with MFA, ACL firewall and active-active HA."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("defguard")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "2.0.1"
