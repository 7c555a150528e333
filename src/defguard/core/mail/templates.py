"""E-mail templates: each name renders to a subject, a plain-text body and an HTML body.

The bodies live as package files under `templates/` (`<name>.txt`,
`<name>.html`). HTML is rendered with autoescaping because most context values
come from users (names, device names, the admin's welcome message); the
plain-text part is not HTML and is rendered as is. A missing context key is an
error rather than an empty gap, so a caller that forgets one finds out when it
queues the mail, not when a user reads a sentence with a hole in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


@dataclass(frozen=True)
class TemplateSpec:
    subject: str
    keys: frozenset[str]


TEMPLATES: dict[str, TemplateSpec] = {
    "enrollment": TemplateSpec(
        "Finish setting up your account", frozenset({"first_name", "url", "token", "expires"})
    ),
    "desktop_activation": TemplateSpec(
        "Activate your desktop client", frozenset({"first_name", "url", "token"})
    ),
    # The subject can be replaced with `subject` in the context (the
    # enrollment settings hold a configurable one).
    "welcome": TemplateSpec("Welcome to Defguard", frozenset({"first_name", "message"})),
    "password_reset": TemplateSpec("Password reset", frozenset({"first_name", "link"})),
    "password_reset_done": TemplateSpec(
        "Your password has been changed", frozenset({"first_name"})
    ),
    "mfa_code": TemplateSpec(
        "Your verification code", frozenset({"first_name", "code", "purpose"})
    ),
    "new_device": TemplateSpec(
        "A new device was added to your account",
        frozenset({"first_name", "device_name", "pubkey", "locations", "ip", "user_agent"}),
    ),
    "test": TemplateSpec("Test message", frozenset()),
}


class TemplateError(ValueError):
    """An unknown template or a context that does not fit it; retrying cannot help."""


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


_loader = PackageLoader("defguard.core.mail", "templates")
_html = Environment(
    loader=_loader, autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
)
# Plain text is never interpreted as markup, so escaping would only mangle it.
_text = Environment(
    loader=_loader,
    autoescape=False,  # noqa: S701
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def check_context(template: str, context: Mapping[str, Any]) -> TemplateSpec:
    """The template's spec, once `context` has every key it needs."""
    spec = TEMPLATES.get(template)
    if spec is None:
        known = ", ".join(sorted(TEMPLATES))
        raise TemplateError(f"unknown e-mail template {template!r} (known: {known})")
    missing = sorted(spec.keys - context.keys())
    if missing:
        raise TemplateError(
            f"e-mail template {template!r} needs context keys: {', '.join(missing)}"
        )
    return spec


def _subject(template: str, spec: TemplateSpec, context: Mapping[str, Any]) -> str:
    subject = spec.subject
    if template == "welcome" and str(context.get("subject") or "").strip():
        subject = str(context["subject"])
    # A header cannot span lines; a configured subject with a newline is folded.
    return " ".join(subject.split())


def render(template: str, context: Mapping[str, Any]) -> RenderedMail:
    spec = check_context(template, context)
    values = dict(context)
    return RenderedMail(
        subject=_subject(template, spec, context),
        text=_text.get_template(f"{template}.txt").render(values),
        html=_html.get_template(f"{template}.html").render(values),
    )
