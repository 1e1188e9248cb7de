"""``clarion keys``: create, list, revoke producer API keys and set their limits."""

from __future__ import annotations

import argparse
import sys

from clarion.settings import Settings


def _limits_of(row) -> str:
    rate = row.rate_limit or "default"
    quota = "default" if row.daily_quota is None else (row.daily_quota or "none")
    return f"rate {rate}, daily quota {quota}"


def keys(args: argparse.Namespace) -> None:
    from clarion.core.auth import UNCHANGED, create_api_key, revoke_api_key, set_api_key_limits
    from clarion.db.models import ApiKey
    from clarion.db.session import make_engine, make_sessionmaker, transaction

    sessions = make_sessionmaker(make_engine(Settings().database_url))
    with transaction(sessions) as session:
        if args.keys_command == "create":
            try:
                row, secret = create_api_key(
                    session=session,
                    name=args.name,
                    scopes=args.scope,
                    rate_limit=args.rate,
                    daily_quota=args.daily_quota,
                )
            except ValueError as exc:
                sys.exit(f"clarion: {exc}")
            print(f"# API key {row.id} ({row.name}, scopes: {', '.join(row.scopes)}).")
            print(f"# Limits: {_limits_of(row)}.", file=sys.stderr)
            print("# Shown once; only its hash is stored.", file=sys.stderr)
            print(secret)
        elif args.keys_command == "list":
            for row in session.query(ApiKey).order_by(ApiKey.id):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                print(
                    f"{row.id}\t{row.name}\t{row.prefix}…\t{','.join(row.scopes)}\t{state}"
                    f"\t{_limits_of(row)}"
                )
        elif args.keys_command == "limits":
            changes = {
                "rate_limit": UNCHANGED if args.rate is None else _or_default(args.rate),
                "daily_quota": UNCHANGED
                if args.daily_quota is None
                else _or_default(args.daily_quota, int),
            }
            try:
                row = set_api_key_limits(session=session, id=args.id, **changes)
            except ValueError as exc:
                sys.exit(f"clarion: {exc}")
            if row is None:
                sys.exit(f"no active key with id {args.id}")
            print(f"API key {row.id} ({row.name}): {_limits_of(row)}")
        elif not revoke_api_key(session=session, id=args.id):
            sys.exit(f"no active key with id {args.id}")


def _or_default(value: str, kind=str):
    """``default`` → None (the settings' limit), else the value."""
    if value == "default":
        return None
    try:
        return kind(value)
    except ValueError:
        sys.exit(f"clarion: {value!r} is neither 'default' nor a number")
