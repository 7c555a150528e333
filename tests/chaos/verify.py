"""After the run: every effect the clients were promised, counted in PostgreSQL."""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL

from tests.chaos.cluster import Cluster, MailSink, Node, sql
from tests.chaos.load import Ledger

# Log lines the referee counts.
EDGE_RETRY = "a Core's stream broke before it answered"
STORED_ANSWER = "answered a retried request from its stored result"
STALL_REQUEUE = re.compile(r"re-queued a job abandoned by a dead worker.*?job_id=(\d+)")


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def _count_in_logs(nodes: Sequence[Node], needle: str) -> int:
    return sum(node.whole_log().count(needle) for node in nodes)


def verify(cluster: Cluster, ledger: Ledger, mail: MailSink) -> Verdict:
    """Read back every effect the clients were promised, and count it."""
    verdict = Verdict()
    _enrollments(cluster.db_url, ledger, verdict)
    _mfa_sessions(cluster.db_url, ledger, verdict)
    _stored_results(cluster.db_url, ledger, verdict)
    requeued = _jobs(cluster, ledger, verdict)
    _mail(cluster.db_url, ledger, mail, requeued, verdict)
    verdict.facts["requests re-sent to another Core"] = _count_in_logs(cluster.edges, EDGE_RETRY)
    verdict.facts["answered from a stored result"] = _count_in_logs(cluster.cores, STORED_ANSWER)
    return verdict


def _succeeded(ledger: Ledger, kind: str) -> int:
    return sum(1 for o in ledger.outcomes if o.ok and o.kind == kind)


def _activity(url: URL) -> collections.Counter[tuple[str, str]]:
    return collections.Counter(
        {
            (user, event): count
            for user, event, count in sql(
                url,
                """SELECT username, event, count(*) FROM activity_log_event
                   WHERE username LIKE 'enr%%' OR username LIKE 'mfa%%' GROUP BY 1, 2""",
            )
        }
    )


def _enrollments(url: URL, ledger: Ledger, verdict: Verdict) -> None:
    """One device per enrolled user, with the key and polling token it was created with."""
    problems = verdict.problems
    names = [e.username for e in ledger.enrolled]
    devices: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for username, pubkey, name in sql(
        url,
        """SELECT u.username, d.wireguard_pubkey, d.name FROM device d
           JOIN "user" u ON u.id = d.user_id WHERE u.username = ANY(%s)""",
        names,
    ):
        devices[username].append((pubkey, name))
    for e in ledger.enrolled:
        if devices.get(e.username) != [(e.pubkey, "laptop")]:
            problems.append(
                f"{e.username} should have one device {e.pubkey}: {devices.get(e.username)}"
            )
    for key, count in sql(
        url, "SELECT wireguard_pubkey, count(*) FROM device GROUP BY 1 HAVING count(*) > 1"
    ):
        problems.append(f"device key {key} exists {count} times")
    created = _succeeded(ledger, "enrollment/create_device")
    ((n_devices,),) = sql(
        url,
        """SELECT count(*) FROM device d JOIN "user" u ON u.id = d.user_id
           WHERE u.username LIKE 'enr%%'""",
    )
    if n_devices != created:
        problems.append(f"{created} create_device requests succeeded but {n_devices} devices exist")
    tokens = dict(
        sql(
            url,
            """SELECT u.username, array_agg(p.token) FROM polling_token p
               JOIN device d ON d.id = p.device_id JOIN "user" u ON u.id = d.user_id
               WHERE u.username = ANY(%s) GROUP BY 1""",
            names,
        )
    )
    events = _activity(url)
    for e in ledger.enrolled:
        if tokens.get(e.username) != [e.polling_token]:
            problems.append(f"{e.username}'s polling tokens {tokens.get(e.username)}, expected one")
        for event in ("enrollment_started", "enrollment_device_added", "enrollment_completed"):
            if events[(e.username, event)] != 1:
                problems.append(f"{e.username}: {events[(e.username, event)]} × {event}")
    not_active = sql(
        url,
        """SELECT username FROM "user" WHERE username = ANY(%s)
           AND (password_hash IS NULL OR enrollment_pending)""",
        names,
    )
    if not_active:
        problems.append(f"enrolled but not activated: {not_active}")


def _mfa_sessions(url: URL, ledger: Ledger, verdict: Verdict) -> None:
    """Each successful MFA finish is one authorized session; each session ends once.

    The session is the one holding the preshared key the finish returned,
    and its success is logged once; each session the expiry job ended has
    one disconnect event.
    """
    problems = verdict.problems
    sessions = collections.Counter(
        dict(
            sql(
                url,
                """SELECT preshared_key, count(*) FROM vpn_client_session
                   WHERE authorized_at IS NOT NULL GROUP BY 1""",
            )
        )
    )
    for a in ledger.authorized:
        if sessions[a.preshared_key] != 1:
            problems.append(
                f"MFA of user {a.user_id} returned a key held by {sessions[a.preshared_key]} sessions"
            )
    if sum(sessions.values()) != len(ledger.authorized):
        problems.append(
            f"{len(ledger.authorized)} MFA finishes succeeded"
            f" but {sum(sessions.values())} sessions were authorized"
        )
    events = _activity(url)
    success = sum(c for (_, e), c in events.items() if e == "vpn_client_mfa_success")
    if success != len(ledger.authorized):
        problems.append(f"{success} MFA success events for {len(ledger.authorized)} finishes")
    ended = dict(
        sql(
            url,
            """SELECT end_reason, count(*) FROM vpn_client_session
               WHERE ended_at IS NOT NULL GROUP BY 1""",
        )
    )
    verdict.facts["sessions ended"] = ended
    expired = dict(
        sql(
            url,
            """SELECT u.username, count(*) FROM vpn_client_session s
               JOIN "user" u ON u.id = s.user_id
               WHERE s.end_reason IN ('inactive', 'never connected') GROUP BY 1""",
        )
    )
    logged = {u: c for (u, e), c in events.items() if e == "vpn_client_mfa_disconnected"}
    for user in sorted(set(expired) | set(logged)):
        if expired.get(user, 0) != logged.get(user, 0):
            problems.append(
                f"{user}: {expired.get(user, 0)} sessions expired,"
                f" {logged.get(user, 0)} disconnect events"
            )


def _stored_results(url: URL, ledger: Ledger, verdict: Verdict) -> None:
    """One stored Edge result per request that succeeded and changed something."""
    stored = collections.Counter(
        dict(sql(url, "SELECT method, count(*) FROM edge_request GROUP BY 1"))
    )
    operations = {
        "enrollment/start": "enrollment.start",
        "enrollment/create_device": "enrollment.create_device",
        "enrollment/activate_user": "enrollment.activate_user",
        "client-mfa/start": "client_mfa.start",
        "client-mfa/finish": "client_mfa.finish",
    }
    for kind, operation in operations.items():
        succeeded = _succeeded(ledger, kind)
        if stored[operation] != succeeded:
            verdict.problems.append(
                f"{succeeded} × {kind} succeeded, {stored[operation]} results stored"
            )


def _jobs(cluster: Cluster, ledger: Ledger, verdict: Verdict) -> collections.Counter[int]:
    """Each job id started once, unless its Core was killed while it ran.

    procrastinate records `started` on every todo → doing and
    `deferred_for_retry` on every doing → todo, so a second run of a job
    shows as started, deferred_for_retry, started. That happens in two ways:
    the task failed and its retry strategy queued it again (a retried
    failure, not a duplicate), or `retry_stalled_jobs` re-queued it because
    its worker stopped sending heartbeats, which it logs with the job id. A
    re-queue of the second kind is legitimate only if a Core was killed
    between the job's start and the re-queue: a worker that is alive must
    never lose its job to another. Returns the re-queues per job id.
    """
    url = cluster.db_url
    requeued: collections.Counter[int] = collections.Counter()
    for node in cluster.cores:
        for match in STALL_REQUEUE.finditer(node.whole_log()):
            requeued[int(match.group(1))] += 1
    history: dict[int, list[tuple[str, float]]] = collections.defaultdict(list)
    for job_id, kind, at in sql(
        url,
        """SELECT job_id, type::text, extract(epoch FROM at)::float8 FROM procrastinate_events
           ORDER BY job_id, id""",
    ):
        history[job_id].append((kind, at))
    task_of = dict(sql(url, "SELECT id, task_name FROM procrastinate_jobs"))
    kills = [k.wall for k in ledger.kills]
    reruns_after_kill = 0
    retried_after_error: list[int] = []
    for job_id, events in history.items():
        starts = [at for kind, at in events if kind == "started"]
        retries = [at for kind, at in events if kind == "deferred_for_retry"]
        if len(starts) <= 1:
            continue
        if len(starts) - 1 != len(retries):
            verdict.problems.append(
                f"job {job_id} ({task_of.get(job_id)}) started {len(starts)} times: {events}"
            )
            continue
        for begun, retried in zip(starts, retries, strict=False):
            if not requeued[job_id]:
                retried_after_error.append(job_id)
            elif any(begun <= w <= retried for w in kills):
                reruns_after_kill += 1
            else:
                verdict.problems.append(
                    f"job {job_id} ({task_of.get(job_id)}) was re-queued as abandoned"
                    f" though no Core was killed while it ran: {events}"
                )
    verdict.facts["jobs re-run after their Core was killed"] = reruns_after_kill
    if retried_after_error:
        verdict.facts["jobs retried after an error"] = retried_after_error
    verdict.facts["jobs"] = dict(
        sql(url, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")
    )
    ((verdict.facts["session expiry runs"],),) = sql(
        url,
        """SELECT count(*) FROM procrastinate_jobs
           WHERE task_name = 'defguard:expire_vpn_sessions' AND status = 'succeeded'""",
    )
    return requeued


def _mail(
    url: URL,
    ledger: Ledger,
    mail: MailSink,
    requeued: collections.Counter[int],
    verdict: Verdict,
) -> None:
    """One mail job per message a request queued, one message per job.

    A job re-run after its Core was killed may deliver its message twice
    (the first run can die between the SMTP server's 250 and marking the
    job done): that many extra messages are allowed, and counted.
    """
    jobs: collections.Counter[str] = collections.Counter()
    reruns: collections.Counter[str] = collections.Counter()
    for job_id, to in sql(
        url, "SELECT id, args->>'to' FROM procrastinate_jobs WHERE task_name = 'defguard:send_mail'"
    ):
        jobs[to] += 1
        reruns[to] += requeued[job_id]
    for e in ledger.enrolled:
        if jobs[e.email] != 2:
            verdict.problems.append(
                f"{e.email}: {jobs[e.email]} mail jobs, expected 2 (welcome, new device)"
            )
    delivered = collections.Counter(to for message in mail.received for to in message)
    for to, count in jobs.items():
        if not count <= delivered[to] <= count + reruns[to]:
            verdict.problems.append(f"{to}: {count} mail jobs, {delivered[to]} messages delivered")
    verdict.facts["mail delivered"] = len(mail.received)
    verdict.facts["mail delivered twice (job re-run after a kill)"] = sum(
        max(0, delivered[to] - count) for to, count in jobs.items()
    )


def mail_settled(url: URL) -> bool:
    rows = sql(
        url,
        """SELECT count(*) FROM procrastinate_jobs
           WHERE task_name = 'defguard:send_mail' AND status NOT IN ('succeeded', 'failed')""",
    )
    return rows[0][0] == 0
