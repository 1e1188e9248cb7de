"""``clarion dead-letters`` and ``clarion failed-requests``: what could not be delivered or
stored, for operators to inspect, replay or purge."""

from __future__ import annotations

import argparse
import sys

from clarion.settings import Settings


def dead_letters(args: argparse.Namespace) -> None:
    import getpass
    import json

    from clarion.core import deadletters
    from clarion.db import deliveries
    from clarion.db.deliveries import DeadLetterFilter
    from clarion.runtime import Runtime

    runtime = Runtime(Settings())
    command, letter_id = args.dl_command, getattr(args, "id", None)
    where = DeadLetterFilter(
        channel=args.channel,
        since=args.since,
        until=args.until,
        error_contains=args.error,
        status="all" if command == "purge" else args.status,
        ids=(letter_id,) if letter_id is not None else None,
    )
    filtered = any((args.channel, args.since, args.until, args.error))
    if command in ("replay", "purge") and letter_id is None and not (filtered or args.all):
        sys.exit("clarion: give an id, a filter (--channel/--since/--until/--error) or --all")
    actor = f"cli:{getpass.getuser()}"
    if command == "list":
        with runtime.sessions() as session:
            for dl in deliveries.dead_letters(session=session, where=where, limit=args.limit):
                replayed = f"replayed {dl.replayed_at:%Y-%m-%d %H:%M}" if dl.replayed_at else "open"
                print(
                    f"{dl.id}\t{dl.created_at:%Y-%m-%d %H:%M:%S}\t{dl.channel}\t{replayed}"
                    f"\t{dl.attempts}\t{dl.error[:100]}"
                )
    elif command == "show":
        with runtime.sessions() as session:
            dl = deliveries.dead_letter(session=session, id=letter_id)
            if dl is None:
                sys.exit(f"clarion: no dead letter {letter_id}")
            timeline = deliveries.attempts_of(session=session, ids=[dl.delivery_id])
            shown = {c.name: getattr(dl, c.name) for c in dl.__table__.columns}
            shown["timeline"] = [
                {c.name: getattr(a, c.name) for c in a.__table__.columns} for a in timeline
            ]
        print(json.dumps(shown, indent=2, default=str))
    elif command == "replay":
        print(
            deadletters.replay(
                sessions=runtime.sessions,
                settings=runtime.settings,
                scheduler=runtime,
                actor=actor,
                where=where,
            )
        )
    else:
        print(deadletters.purge(sessions=runtime.sessions, actor=actor, where=where))
    runtime.close()


def failed_requests(args: argparse.Namespace) -> None:
    import uuid

    from clarion.db import failed
    from clarion.db.session import make_engine, make_sessionmaker

    engine = make_engine(Settings().database_url)
    with make_sessionmaker(engine)() as session:
        if args.failed_command == "list":
            for row in failed.page(session=session, limit=args.limit, producer=args.producer):
                print(
                    f"{row.request_id}\t{row.created_at:%Y-%m-%d %H:%M:%S}\t{row.kind}"
                    f"\t{row.producer or '-'}\t{row.reason[:120]}"
                )
            return
        row = failed.get(session=session, request_id=uuid.UUID(args.request_id))
        if row is None:
            sys.exit(f"clarion: no failed request {args.request_id}")
        print(f"# {row.kind} from {row.producer or '-'} at {row.created_at}: {row.reason}")
        print(row.request)
