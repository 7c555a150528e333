"""Outgoing e-mail: queued with the change that causes it, delivered by the job worker to a real SMTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from defguard.core.jobs import running_worker
from defguard.core.mail.sender import SmtpConfig, build_message, send_message
from defguard.core.mail.service import queue_mail
from defguard.core.mail.templates import TEMPLATES, TemplateError, render
from defguard.core.settings.models import Settings, SmtpEncryption
from defguard.core.settings.service import get_settings_row

SMTP_USER = "mailer"
SMTP_PASSWORD = "Sm7p-Pa55word"
SENDER = "defguard@example.com"
RESET_LINK = "https://vpn.example.com/password-reset/?token=Zq8sKx31Vb9"

CONTEXTS: dict[str, dict[str, Any]] = {
    "enrollment": {
        "first_name": "Jane",
        "url": "https://enroll.example.com",
        "token": "EnrollTok3n",
        "expires": "2030-01-02 10:00 UTC",
    },
    "desktop_activation": {
        "first_name": "Jane",
        "url": "https://enroll.example.com",
        "token": "Act1vationTok",
    },
    "welcome": {"first_name": "Jane", "message": "Read the VPN guide on the intranet."},
    "password_reset": {"first_name": "Jane", "link": RESET_LINK},
    "password_reset_done": {"first_name": "Jane"},
    "mfa_code": {"first_name": "Jane", "code": "482913", "purpose": "signing in"},
    "new_device": {
        "first_name": "Jane",
        "device_name": "laptop",
        "pubkey": "mR5fBFbbMYmdjp6/7ZNkB3O4lPGgS3fs0mTb2ELKgVs=",
        "locations": ["HQ", "Branch"],
        "ip": "203.0.113.7",
        "user_agent": "Firefox 123, OS: Linux",
    },
    "test": {},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a real SMTP server on loopback --------------------------------------------------


@dataclass
class Received:
    envelope_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


@dataclass
class Mailbox:
    """What the server accepted, in order."""

    received: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        tls = server.transport.get_extra_info("ssl_object") is not None
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), message, tls, login)
        )
        return "250 Message accepted for delivery"


def authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, auth_data=auth_data)


@dataclass
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_path, key_path)


class SmtpServer:
    def __init__(self, port: int, **options: Any) -> None:
        self.port = port
        self.mailbox = Mailbox()
        self.controller = Controller(
            self.mailbox, hostname="127.0.0.1", port=port, authenticator=authenticate, **options
        )

    @property
    def received(self) -> list[Received]:
        return self.mailbox.received

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server that requires the test credentials."""
    with SmtpServer(free_port(), auth_require_tls=False) as server:
        yield server


async def configure_smtp(
    db,
    port: int,
    *,
    server: str = "127.0.0.1",
    encryption: SmtpEncryption = SmtpEncryption.NONE,
    user: str | None = SMTP_USER,
    password: str | None = SMTP_PASSWORD,
) -> None:
    async with db.transaction() as s:
        row = await get_settings_row(s)
        row.smtp_server = server
        row.smtp_port = port
        row.smtp_encryption = encryption
        row.smtp_user = user
        row.smtp_password = password
        row.smtp_sender = SENDER


# -- the job queue ---------------------------------------------------------------------


async def mail_jobs(db) -> list[dict[str, Any]]:
    async with db.session() as s:
        rows = await s.execute(
            text(
                "SELECT id, status::text AS status, attempts, scheduled_at, args"
                " FROM procrastinate_jobs WHERE task_name = 'defguard:send_mail' ORDER BY id"
            )
        )
        return [dict(row._mapping) for row in rows]


async def wait_until(check, *, timeout: float = 20.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def mail_worker(fresh_db_url, db):
    """This process's worker, polling often so that a retry 2 s later is picked up quickly."""
    return running_worker(fresh_db_url, db, queues=["mail"], fetch_job_polling_interval=0.2)


async def all_mail_done(db) -> bool:
    jobs = await mail_jobs(db)
    return bool(jobs) and all(j["status"] in ("succeeded", "failed") for j in jobs)


def parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


# -- delivery ----------------------------------------------------------------------------


async def test_committed_mail_is_delivered_once_and_its_secret_stays_out_of_the_log(
    fresh_db_url, db, smtp_server, caplog
):
    await configure_smtp(db, smtp_server.port)
    context = {"first_name": "Jane <Admin>", "link": RESET_LINK}
    async with db.transaction() as s:
        await queue_mail(s, to="jane@example.com", template="password_reset", context=context)

    caplog.set_level(logging.INFO, logger="procrastinate")
    async with mail_worker(fresh_db_url, db):
        await wait_until(lambda: all_mail_done(db), what="the send_mail job")
        await asyncio.sleep(0.5)  # a duplicate delivery would show up here

    [job] = await mail_jobs(db)
    assert job["status"] == "succeeded"
    assert len(smtp_server.received) == 1
    got = smtp_server.received[0]
    assert got.rcpt_tos == ["jane@example.com"]
    assert got.envelope_from == SENDER
    assert got.login == SMTP_USER.encode()
    assert got.tls is False
    message = got.message
    assert message["To"] == "jane@example.com"
    assert message["Subject"] == "Password reset"
    assert message["From"].addresses[0].addr_spec == SENDER
    assert message["From"].addresses[0].display_name == "Defguard"
    assert message.get_content_type() == "multipart/alternative"
    # The same on every attempt of this job, so a re-sent copy is recognisably the same mail.
    assert message["Message-ID"] == f"<defguard-job-{job['id']}@{SENDER.split('@')[1]}>"
    plain, html = parts(message)
    assert "Hello Jane <Admin>," in plain
    assert RESET_LINK in plain
    assert "Jane &lt;Admin&gt;" in html and "<Admin>" not in html
    assert RESET_LINK.replace("&", "&amp;") in html

    worker_lines = [r.getMessage() for r in caplog.records if r.name.startswith("procrastinate")]
    assert any(
        "defguard:send_mail[" in line and "jane@example.com" in line for line in worker_lines
    )
    assert not any("Zq8sKx31Vb9" in line for line in worker_lines)


async def test_rolled_back_transaction_sends_nothing(fresh_db_url, db, smtp_server):
    await configure_smtp(db, smtp_server.port)
    async with db.session() as s:
        await s.begin()
        await queue_mail(s, to="ghost@example.com", template="test", context={})
        await s.rollback()
    assert await mail_jobs(db) == []

    # A committed mail queued afterwards shows the worker ran and sent only that one.
    async with db.transaction() as s:
        await queue_mail(s, to="real@example.com", template="test", context={})
    async with mail_worker(fresh_db_url, db):
        await wait_until(lambda: all_mail_done(db), what="the send_mail job")
    assert [r.rcpt_tos for r in smtp_server.received] == [["real@example.com"]]


async def test_smtp_server_down_leaves_the_job_to_be_retried_until_it_is_delivered(
    fresh_db_url, db
):
    port = free_port()  # nothing listens here yet
    await configure_smtp(db, port)
    async with db.transaction() as s:
        await queue_mail(s, to="jane@example.com", template="test", context={})

    async def failed_once():
        jobs = await mail_jobs(db)
        return jobs and jobs[0]["attempts"] >= 1 and jobs[0]["status"] == "todo" and jobs[0]

    async with mail_worker(fresh_db_url, db):
        job = await wait_until(failed_once, what="a failed first attempt")
        async with db.session() as s:
            now = (await s.execute(text("SELECT now()"))).scalar_one()
        assert job["scheduled_at"] > now - dt.timedelta(seconds=1)  # waits before the retry

        with SmtpServer(port, auth_require_tls=False) as server:
            await wait_until(lambda: all_mail_done(db), what="the retried job")
            [job] = await mail_jobs(db)
            assert job["status"] == "succeeded"
            assert [r.rcpt_tos for r in server.received] == [["jane@example.com"]]


async def test_mail_without_smtp_settings_is_not_queued(db):
    async with db.transaction() as s:
        assert await queue_mail(s, to="jane@example.com", template="test", context={}) is False
    assert await mail_jobs(db) == []


async def test_mail_whose_smtp_settings_went_stays_queued_for_a_retry(fresh_db_url, db):
    """Settings removed between queueing and sending: the job waits for them."""
    await configure_smtp(db, 2525)
    async with db.transaction() as s:
        assert await queue_mail(s, to="jane@example.com", template="test", context={})
        row = await s.get(Settings, 1)
        row.smtp_server = None

    async def attempted():
        jobs = await mail_jobs(db)
        return jobs and jobs[0]["attempts"] >= 1 and jobs[0]

    async with mail_worker(fresh_db_url, db):
        job = await wait_until(attempted, what="an attempt")
    assert job["status"] == "todo"


@pytest.mark.parametrize(
    ("encryption", "options"),
    [
        (SmtpEncryption.STARTTLS, {"require_starttls": True}),
        # aiosmtpd offers AUTH on an implicit-TLS port only when told TLS is not required.
        (SmtpEncryption.IMPLICIT_TLS, {"auth_require_tls": False}),
    ],
)
async def test_tls_delivery_with_login(
    fresh_db_url, db, certificate, monkeypatch, encryption, options
):
    tls = certificate.server_context()
    if encryption is SmtpEncryption.STARTTLS:
        options = {**options, "tls_context": tls}
    else:
        options = {**options, "ssl_context": tls}
    # The Core trusts the system's CA store; here that store is the test certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    with SmtpServer(free_port(), **options) as server:
        await configure_smtp(db, server.port, server="localhost", encryption=encryption)
        async with db.transaction() as s:
            await queue_mail(
                s, to="jane@example.com", template="mfa_code", context=CONTEXTS["mfa_code"]
            )
        async with mail_worker(fresh_db_url, db):
            await wait_until(lambda: all_mail_done(db), what="the send_mail job")
        [job] = await mail_jobs(db)
        assert job["status"] == "succeeded"
        [got] = server.received
    assert got.tls is True
    assert got.login == SMTP_USER.encode()
    assert "482913" in parts(got.message)[0]


async def test_untrusted_certificate_is_refused(certificate):
    """Without the certificate in the trust store nothing is sent, not even the password."""
    with SmtpServer(
        free_port(), tls_context=certificate.server_context(), require_starttls=True
    ) as server:
        config = SmtpConfig(
            server="localhost",
            port=server.port,
            encryption=SmtpEncryption.STARTTLS,
            user=SMTP_USER,
            password=SMTP_PASSWORD,
            sender=SENDER,
            sender_name="Defguard",
        )
        message = build_message(config, "jane@example.com", render("test", {}))
        with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError)):
            await send_message(config, message)
        assert server.received == []


# -- templates -----------------------------------------------------------------------------


def test_every_template_of_the_contract_renders_its_context():
    assert set(TEMPLATES) == set(CONTEXTS)
    for name, context in CONTEXTS.items():
        mail = render(name, context)
        assert mail.subject and "\n" not in mail.subject, name
        for key, value in context.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                assert v in mail.text, (name, key)
                assert v.replace("<", "&lt;") in mail.html, (name, key)
        assert mail.html.lstrip().startswith("<!DOCTYPE html>"), name


def test_html_is_escaped_and_text_is_not():
    mail = render(
        "welcome", {"first_name": "<script>x</script>", "message": 'Say "hi" & <b>go</b>'}
    )
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    assert "&lt;b&gt;go&lt;/b&gt;" in mail.html
    assert 'Say "hi" & <b>go</b>' in mail.text


def test_welcome_subject_can_be_configured_but_stays_one_line():
    mail = render("welcome", {"first_name": "J", "message": "m", "subject": "Hello\r\nBcc: x@y"})
    assert mail.subject == "Hello Bcc: x@y"
    assert render("welcome", {"first_name": "J", "message": "m"}).subject == "Welcome to Defguard"


async def test_unknown_template_or_missing_context_is_refused_when_queueing(db):
    async with db.transaction() as s:
        with pytest.raises(TemplateError, match="unknown e-mail template 'nope'"):
            await queue_mail(s, to="a@example.com", template="nope", context={})
        with pytest.raises(TemplateError, match="token"):
            await queue_mail(
                s,
                to="a@example.com",
                template="desktop_activation",
                context={"first_name": "A", "url": "u"},
            )
    assert await mail_jobs(db) == []
