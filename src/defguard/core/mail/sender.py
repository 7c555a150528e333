"""Delivering one rendered message through the SMTP server in the settings row.

Only the recipient and the template name are ever logged: bodies carry reset
links and one-time codes, and the SMTP password stays out of every repr.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import aiosmtplib

from defguard.core.mail.templates import RenderedMail
from defguard.core.settings.models import Settings, SmtpEncryption

# Submission ports by convention when the settings leave the port empty.
DEFAULT_PORTS = {
    SmtpEncryption.NONE: 25,
    SmtpEncryption.STARTTLS: 587,
    SmtpEncryption.IMPLICIT_TLS: 465,
}
SEND_TIMEOUT_SECONDS = 30.0


class SmtpNotConfigured(RuntimeError):
    """No server or sender address saved yet; the job stays visible and is retried."""


@dataclass(frozen=True)
class SmtpConfig:
    server: str
    port: int
    encryption: SmtpEncryption
    user: str | None
    password: str | None = field(repr=False)
    sender: str
    sender_name: str

    @classmethod
    def from_settings(cls, row: Settings) -> SmtpConfig:
        if not row.smtp_configured or row.smtp_server is None or row.smtp_sender is None:
            raise SmtpNotConfigured("SMTP is not configured (smtp_server and smtp_sender)")
        return cls(
            server=row.smtp_server,
            port=row.smtp_port or DEFAULT_PORTS[row.smtp_encryption],
            encryption=row.smtp_encryption,
            user=row.smtp_user or None,
            password=row.smtp_password or None,
            sender=row.smtp_sender,
            sender_name=row.instance_name,
        )


def build_message(
    config: SmtpConfig, to: str, mail: RenderedMail, *, message_key: str | None = None
) -> EmailMessage:
    """A multipart/alternative message: clients that cannot show HTML show the text part.

    `message_key` (the job's id) makes the Message-ID the same on every
    attempt: a job re-run after its Core died between the SMTP server's
    acceptance and the job's completion sends a copy that mail systems
    recognise as the same message.
    """
    message = EmailMessage()
    message["From"] = formataddr((config.sender_name, config.sender))
    message["To"] = to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(usegmt=True)
    domain = config.sender.rpartition("@")[2] or None
    if message_key:
        message["Message-ID"] = f"<defguard-{message_key}@{domain or 'localhost'}>"
    else:
        message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


async def send_message(
    config: SmtpConfig,
    message: EmailMessage,
    *,
    tls_context: ssl.SSLContext | None = None,
) -> None:
    """Deliver `message`; raises on any failure so that the caller's job is retried.

    With encryption `None` the connection stays plain even if the server
    offers STARTTLS: the admin chose it, and an opportunistic upgrade to a
    server with an untrusted certificate would fail instead of sending.
    Certificates are verified against the system's trust store unless a
    context is given.
    """
    await aiosmtplib.send(
        message,
        sender=config.sender,
        recipients=[str(message["To"])],
        hostname=config.server,
        port=config.port,
        username=config.user,
        password=config.password if config.user else None,
        use_tls=config.encryption is SmtpEncryption.IMPLICIT_TLS,
        start_tls=config.encryption is SmtpEncryption.STARTTLS,
        timeout=SEND_TIMEOUT_SECONDS,
        tls_context=tls_context,
    )
