"""Managing templates (the admin API's side): saving versions, listing them with the
built-ins, and the API processes' cached view used to validate sends by template."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clarion.channels import registry
from clarion.core.templates import (
    TemplateError,
    TemplateVersion,
    builtins,
    check_version,
    exists,
    index,
    pick,
    render,
)
from clarion.db import templates as templates_db
from clarion.db.session import transaction
from clarion.ids import utcnow
from clarion.locales import canonical_locale

SAVE_ATTEMPTS = 3
log = logging.getLogger(__name__)


class TemplatesUnavailable(Exception):
    """The template store cannot be read and no earlier reading is cached."""


class VersionConflict(Exception):
    """Concurrent saves of the same key, channel and locale kept colliding."""


def save_version(
    *,
    sessions: sessionmaker[Session],
    key: str,
    channel: str,
    locale: str,
    subject: str | None,
    html: str | None,
    text: str | None,
    active: bool,
    created_by: str,
) -> TemplateVersion:
    """Check and store version n+1 (active unless ``active`` is false) in its own
    transaction. Raises TemplateError (field, line) for a template that does not compile
    or reaches for internals; VersionConflict if concurrent saves keep winning."""
    check_version(subject=subject, html=html, text=text)
    locale = canonical_locale(locale)
    for _ in range(SAVE_ATTEMPTS):
        try:
            with transaction(sessions) as session:
                row = templates_db.add_version(
                    session=session,
                    key=key,
                    channel=channel,
                    locale=locale,
                    subject=subject,
                    html=html,
                    text=text,
                    active=active,
                    created_by=created_by,
                    now=utcnow(),
                )
                return TemplateVersion.of(row)
        except IntegrityError:
            # Another save took this version number (or the active slot) first: the next
            # attempt numbers after it.
            continue
    raise VersionConflict(f"concurrent saves of {key}/{channel}/{locale}; retry")


@dataclass
class KeySummary:
    """A key with the version each of its (channel, locale) slots uses now."""

    key: str
    builtin: bool
    active: list[TemplateVersion] = field(default_factory=list)


def summaries(*, session: Session) -> list[KeySummary]:
    """Every key, stored or built-in, with its active versions; a stored active version
    hides the built-in of its slot."""
    slots: dict[tuple[str, str, str], TemplateVersion] = dict(builtins())
    slots.update(index(templates_db.active_versions(session=session)))
    found: dict[str, KeySummary] = {}
    builtin_keys = {k[0] for k in builtins()}
    for key in sorted({k[0] for k in slots} | set(templates_db.keys(session=session))):
        found[key] = KeySummary(key=key, builtin=key in builtin_keys)
    for (key, _, _), version in sorted(slots.items()):
        found[key].active.append(version)
    return list(found.values())


def history(*, session: Session, key: str) -> list[TemplateVersion]:
    """Every stored version of ``key`` (newest first per slot), then its built-ins."""
    stored = [TemplateVersion.of(r) for r in templates_db.versions_of(session=session, key=key)]
    overridden = {(v.channel, v.locale) for v in stored if v.active}
    shipped = [
        TemplateVersion(**{**v.__dict__, "active": (v.channel, v.locale) not in overridden})
        for k, v in sorted(builtins().items())
        if k[0] == key
    ]
    return stored + shipped


class TemplateCatalog:
    """An API process's view of the active versions, reloaded (one query for all of them)
    after ``cache_seconds``, so that a send by template costs no database query."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        default_locale: str,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions, self.default_locale = sessions, default_locale
        self.cache_seconds, self.clock = cache_seconds, clock
        self._stored: Mapping[tuple[str, str, str], TemplateVersion] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Reload at the next use (this process changed a template)."""
        with self._lock:
            self._loaded_at = None

    def stored(self) -> Mapping[tuple[str, str, str], TemplateVersion]:
        """The active stored versions; on a database error, the last ones read (if any)
        for another ``cache_seconds``, else TemplatesUnavailable."""
        with self._lock:
            now = self.clock()
            if self._loaded_at is None or now - self._loaded_at >= self.cache_seconds:
                try:
                    with self.sessions() as session:
                        self._stored = index(templates_db.active_versions(session=session))
                except SQLAlchemyError as exc:
                    if self._loaded_at is None:
                        raise TemplatesUnavailable(str(exc)) from exc
                    log.warning("templates not reloaded (%s); using the last ones read", exc)
                self._loaded_at = now
            return self._stored

    def validate(self, key: str, data: Mapping[str, Any] | None) -> None:
        """Raise TemplateError unless ``key`` exists and renders with ``data`` on each
        channel, in the default locale (a key with no version there: in the locales it
        has). Recipients' own locales are rendered at create and send."""
        stored = self.stored()
        if not exists(stored, key):
            raise TemplateError(f"no template {key!r}", kind="unknown")
        default = self.default_locale
        versions = {v for ch in registry.names() if (v := pick(stored, key, ch, default, default))}
        if not versions:
            versions = {v for k, v in (*stored.items(), *builtins().items()) if k[0] == key}
        for version in sorted(versions, key=lambda v: (v.channel, v.locale)):
            try:
                render(version, data)
            except TemplateError as exc:
                exc.channel, exc.locale = version.channel, version.locale
                raise
