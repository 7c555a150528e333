"""What a chaos run does, and how hard."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChaosOptions:
    """The test's defaults: enough of everything to see each effect, on 2 CPUs."""

    seconds: float = 40.0
    cores: int = 3
    edges: int = 2
    gateways: int = 1
    mfa_users: int = 120
    poll_rate: float = 30.0  # polls per second, all lanes together
    mfa_rate: float = 3.0  # MFA connects (start + finish) per second
    enroll_rate: float = 1.0  # enrollments (3 Edge requests each) per second
    kill_every: tuple[float, float] = (3.0, 5.0)
    down_for: float = 1.0
    # A kill waits (up to 1 s) for this many client requests in flight.
    kill_in_flight: int = 3
    # Also kill Cores that are still starting (each restart costs ~2 CPU-seconds).
    kill_starting: bool = False
    # Idle seconds before an MFA session ends; low, so that the expiry job
    # ends sessions (and takes peers off the gateways) during the run.
    session_threshold: int = 20
    sync_allowance: float = 2.0
    sample_every: float = 0.2
    # How long to wait after the load for queued e-mail: a job held by a
    # killed Core is re-queued once its worker has been silent for 30 s.
    jobs_grace: float = 75.0
    seed: int | None = None
