"""Templates: which version a recipient gets, and what it renders to.

One resolution, used everywhere (API validation and preview, the inbox row at create,
email and push at send, digests): for each locale of ``ru-RU → ru → default_locale``, a
stored active version for the channel, then a stored one for every channel ("*"), then
the built-in ones in the same order. So a stored version overrides the built-in of its
own key, channel and locale, and a Russian subscriber keeps the built-in Russian text
when an operator overrides only the English one.

Rendering goes through :mod:`clarion.core.sandbox`; compiled templates are cached per
source in the process (versions never change, so a source is a version's identity).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clarion.channels.registry import inbox
from clarion.core.sandbox import FIELDS, TemplateError, check, render_field
from clarion.db import templates as templates_db
from clarion.locales import locale_chain

log = logging.getLogger(__name__)
INBOX = inbox()

ANY = "*"
MAX_TITLE = 500

__all__ = [
    "ANY",
    "InboxTexts",
    "Rendered",
    "Renderer",
    "TemplateError",
    "TemplateVersion",
    "builtins",
    "check_version",
    "pick",
    "render",
    "resolve",
]


@dataclass(frozen=True)
class TemplateVersion:
    """One version of a template: stored (``id`` set) or built-in (``builtin``)."""

    key: str
    channel: str
    locale: str
    subject: str | None
    html: str | None
    text: str | None
    version: int = 0
    id: int | None = None
    active: bool = True
    builtin: bool = False
    created_at: datetime | None = None
    created_by: str | None = None

    @classmethod
    def of(cls, row: Any) -> TemplateVersion:
        """From a stored ``Template`` row."""
        return cls(
            key=row.key,
            channel=row.channel,
            locale=row.locale,
            subject=row.subject,
            html=row.html,
            text=row.text,
            version=row.version,
            id=row.id,
            active=row.active,
            created_at=row.created_at,
            created_by=row.created_by,
        )


@dataclass(frozen=True)
class Rendered:
    """A version rendered with data: email subject / push and in-app title, email HTML,
    and the plain text (email text part, push and in-app body)."""

    subject: str | None
    html: str | None
    text: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"subject": self.subject, "html": self.html, "text": self.text}


# -- versions -----------------------------------------------------------------------------
@functools.cache
def builtins() -> dict[tuple[str, str, str], TemplateVersion]:
    """(key, channel, locale) → built-in version, loaded once from the package."""
    from clarion.templates import builtin_sources

    return {
        (key, channel, locale): TemplateVersion(
            key=key, channel=channel, locale=locale, builtin=True, **sources
        )
        for (key, channel, locale), sources in builtin_sources().items()
    }


Stored = Mapping[tuple[str, str, str], TemplateVersion]


def index(rows: Iterable[Any]) -> dict[tuple[str, str, str], TemplateVersion]:
    """Active stored versions by (key, channel, locale), as ``pick`` reads them."""
    return {(r.key, r.channel, r.locale): TemplateVersion.of(r) for r in rows}


def pick(
    stored: Stored, key: str, channel: str, locale: str | None, default_locale: str
) -> TemplateVersion | None:
    """The version ``key`` renders with on ``channel`` for ``locale`` (see the module
    docstring for the order), or None when the key has none on that path."""
    layers = (stored, builtins())
    for loc in locale_chain(locale, default_locale):
        for layer in layers:
            for ch in (channel, ANY):
                found = layer.get((key, ch, loc))
                if found is not None:
                    return found
    return None


def resolve(
    *, session: Session, key: str, channel: str, locale: str | None, default_locale: str
) -> TemplateVersion | None:
    """The version of ``key`` for this channel and locale (one query)."""
    stored = index(templates_db.active_versions(session=session, keys=[key]))
    return pick(stored, key, channel, locale, default_locale)


def exists(stored: Stored, key: str) -> bool:
    return any(k[0] == key for k in stored) or any(k[0] == key for k in builtins())


def check_version(*, subject: str | None, html: str | None, text: str | None) -> None:
    """Save-time check of a new version: each field compiles and holds no escape
    attempt. Raises TemplateError naming the field and line."""
    for field, source in zip(FIELDS, (subject, html, text), strict=True):
        if source is not None:
            check(field, source)


def render(version: TemplateVersion, data: Mapping[str, Any] | None) -> Rendered:
    """The version rendered with ``data`` (its keys are the template's variables).

    Raises TemplateError (field, line, and the variable when one is missing). The subject
    is one line: surrounding whitespace is dropped, a line break inside is an error.
    """
    values = dict(data or {})
    subject = render_field("subject", version.subject, values)
    if subject is not None:
        subject = subject.strip()
        if "\n" in subject or "\r" in subject:
            raise TemplateError("the subject must be one line", field="subject")
    return Rendered(
        subject=subject,
        html=render_field("html", version.html, values),
        text=render_field("text", version.text, values),
    )


# -- batches: the pipeline's side ---------------------------------------------------------
class Renderer:
    """Resolves and renders for one batch (a create run, a deliver chunk): the active
    versions of the batch's keys are read in one query, each (key, channel, locale) is
    resolved once, and a render is reused for the same data."""

    def __init__(self, *, session: Session, keys: Iterable[str], default_locale: str) -> None:
        keys = set(keys)
        rows = templates_db.active_versions(session=session, keys=keys) if keys else []
        self.stored = index(rows)
        self.default_locale = default_locale
        self._rendered: dict[tuple, Rendered] = {}

    def version(self, key: str, channel: str, locale: str | None) -> TemplateVersion | None:
        return pick(self.stored, key, channel, locale, self.default_locale)

    def render(
        self,
        key: str,
        channel: str,
        locale: str | None,
        data: Mapping[str, Any] | None,
        *,
        share: object = None,
    ) -> Rendered:
        """Render ``key`` for the channel and locale; ``share`` names data shared by
        several calls (a request's), so each version renders it once."""
        version = self.version(key, channel, locale)
        if version is None:
            raise TemplateError(
                f"no template {key!r} for {channel} in {locale or 'any locale'}", kind="unknown"
            )
        cache_key = (share, version.key, version.channel, version.locale, version.id)
        if share is not None and cache_key in self._rendered:
            return self._rendered[cache_key]
        rendered = render(version, data)
        if share is not None:
            self._rendered[cache_key] = rendered
        return rendered

    def inbox_text(
        self, key: str, data: Mapping[str, Any] | None, locale: str | None, *, share: object
    ) -> tuple[str, str | None]:
        """The inbox row's title and body. A notification is never lost to its template:
        the recipient's locale, else the default locale, else the key as the title."""
        for loc in dict.fromkeys((locale, self.default_locale)):
            try:
                rendered = self.render(key, INBOX, loc, data, share=share)
            except TemplateError as exc:
                log.warning("template %s (%s, %s) did not render: %s", key, INBOX, loc, exc)
                continue
            title = rendered.subject or key
            return title[:MAX_TITLE], rendered.text
        log.error("template %s renders in no locale: the inbox shows its key as the title", key)
        return key[:MAX_TITLE], None


class InboxTexts:
    """The title and body of each new inbox row of a create run: the request's own, or
    its template rendered for in_app (else "*") in the recipient's locale (as the create
    step read it with the recipients' locks). A request's data is rendered once per
    locale: its recipients share it."""

    def __init__(
        self,
        *,
        session: Session,
        messages: Iterable[Any],
        locales: Mapping[str, str],
        default_locale: str,
    ) -> None:
        keys = {m.content.template for m in messages if m.content.template}
        self.renderer: Renderer | None = None
        self.locales = locales
        self._texts: dict[tuple[int, str | None], tuple[str, str | None]] = {}
        if keys:
            self.renderer = Renderer(session=session, keys=keys, default_locale=default_locale)

    def of(self, message: Any, recipient: str) -> tuple[str, str | None]:
        content = message.content
        if content.template is None or self.renderer is None:
            return content.title, content.body
        # By identity: the run holds its messages, so an id is not reused meanwhile.
        key = (id(message), self.locales.get(recipient))
        if key not in self._texts:
            self._texts[key] = self.renderer.inbox_text(
                content.template, content.data, key[1], share=message.request_id
            )
        return self._texts[key]
