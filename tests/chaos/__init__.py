"""Cores killed with SIGKILL under steady client load, and a referee that reads the aftermath.

Shared by `tests/e2e/test_chaos.py` (about a minute, in CI) and
`bench/bench_chaos.py` (five minutes by default); imports nothing from pytest.

Everything is a real process: N `defguard core`, M `defguard edge`, K
`defguard gateway` (each in its own network namespace, userspace WireGuard),
PostgreSQL, and an SMTP server that counts the mail it receives. This
process is the load generator (aiohttp), the killer and the referee:

- Load: paced lanes of enrollments (admin REST for the token, then the three
  Edge steps), VPN-client MFA connects (`client-mfa/start` + `finish` with the
  current TOTP code) and config polls, each request to the next Edge in turn.
- Killer: every few seconds, at a moment when client requests are in
  flight, a random Core that is linked to every Edge gets SIGKILL, and is
  started again a second later. One Core linked to every Edge is always left
  alive: an Edge answers a request that finds no Core at all with 503 at
  once, and re-sends one whose Core died only within its 5 s deadline.
- Referee, during the run: the database's desired peers of the location and
  every Gateway's `wg show dump`, sampled side by side; a Gateway may show,
  for each peer, only a value that the database wanted at some moment of the
  last `sync_allowance` seconds.
- Referee, after the run: every client request answered 200; each enrolled
  device, each MFA session, each stored Edge result, each job and each e-mail
  exists exactly as often as the successful requests say (see `verify`).
"""

from tests.chaos.cluster import Cluster, running_cluster
from tests.chaos.options import ChaosOptions
from tests.chaos.run import ChaosResult, run_chaos

__all__ = ["ChaosOptions", "ChaosResult", "Cluster", "run_chaos", "running_cluster"]
