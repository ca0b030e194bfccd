"""Command line: ``amplitude-sync`` prefills the hour store (and publishes the lake with ``--lake``, then refreshes
the Spark Thrift Server serving it with ``--spark``); ``amplitude-load`` loads an export zip by hand;
``amplitude-lake`` publishes the lake (refreshing Spark likewise) and prints engines' DDL.

The secret key is read from ``$AMPLITUDE_SECRET_KEY`` only (never from the command line, where other users of
the machine could see it in the process list); the API key from ``--api-key`` or ``$AMPLITUDE_API_KEY``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from .export.client import AmplitudeError, ExportClient, resolve_base_url
from .export.loader import fill, load_archive
from .export.sync import days_range, sync_project
from .hours import HOUR, floor_hour, hour_count
from .lake.ddl import ENGINES, script
from .lake.publish import publish
from .lake.refresh import SparkRefreshError, SparkTarget, refresh_spark
from .store.hour_store import HourStore


def parse_time(text: str, *, end: bool = False) -> datetime:
    """``2026-03-01`` (a whole day; as an end, through its last hour) or an ISO datetime, as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO datetime: {text!r}") from None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if end and len(text) == 10:
        return value + timedelta(days=1) - HOUR
    return floor_hour(value)


#: Both commands' help ends with where the secret comes from.
SECRET_HELP = ("The secret key is read from $AMPLITUDE_SECRET_KEY only, never from the command line: "
               "export AMPLITUDE_API_KEY=... AMPLITUDE_SECRET_KEY=...")
NO_SECRET = "the secret key is needed: set $AMPLITUDE_SECRET_KEY (never given on the command line)"


def _project_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", default=os.environ.get("AMPLITUDE_API_KEY"),
                        help="project API key (default: $AMPLITUDE_API_KEY)")
    parser.add_argument("--region", default=os.environ.get("AMPLITUDE_REGION", "us"), choices=["us", "eu"],
                        help="data region (default: $AMPLITUDE_REGION or us)")
    parser.add_argument("--base-url", help="API host, overrides --region (proxies, the local emulator)")
    parser.add_argument("--cache-dir", help="hour store folder (default: per-user cache, or $AMPLITUDE_CACHE_DIR)")


def _lake_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--late-hours", type=int, default=48,
                        help="hours after its day an upload can still add to a day, as the connection's (default 48)")
    if required:
        parser.add_argument("lake", help="the lake: a folder or an object storage URI, as --cache-dir")
    else:
        parser.add_argument("--lake", default=os.environ.get("AMPLITUDE_LAKE"),
                            help="then publish the days the synced hours touch to this lake (default: $AMPLITUDE_LAKE)")
    parser.add_argument("--spark", default=os.environ.get("AMPLITUDE_LAKE_SPARK"), metavar="hive://HOST:PORT/SCHEMA",
                        help="after publishing, refresh the lake's tables on this Spark Thrift Server (a warning if it "
                             "cannot be; default: $AMPLITUDE_LAKE_SPARK)")


def _check_lake_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.late_hours < 0:
        parser.error("--late-hours must be at least 0")
    if args.spark:
        if not args.lake:
            parser.error("--spark refreshes the lake's tables after publishing: give --lake too")
        try:
            SparkTarget.parse(args.spark)
        except ValueError as exc:
            parser.error(f"--spark: {exc}")


def _store(args: argparse.Namespace) -> HourStore:
    if not args.api_key:
        raise AmplitudeError("an API key is needed: --api-key or $AMPLITUDE_API_KEY")
    return HourStore(args.cache_dir, _base_url(args), args.api_key)


def _base_url(args: argparse.Namespace) -> str:
    return resolve_base_url(args.region, args.base_url)


def sync_main(argv: list[str] | None = None) -> int:
    """Download every missing upload hour of a range into the store, with a progress bar.

    ``--days N`` (for cron, Kubernetes CronJobs, operators without Celery): the last N days through the newest
    exportable hour, re-reading the recent hours that are not final yet, like the background sync.
    """
    parser = argparse.ArgumentParser(prog="amplitude-sync", description=sync_main.__doc__.split("\n\n")[0],
                                     epilog=SECRET_HELP)
    parser.add_argument("--days", type=int, help="the last N days through the newest exportable hour")
    parser.add_argument("--start", type=parse_time, help="first day or hour (UTC)")
    parser.add_argument("--end", type=lambda text: parse_time(text, end=True),
                        help="last day or hour (UTC), included")
    parser.add_argument("--window-hours", type=int, default=24, help="hours per Export API request (default 24)")
    _project_arguments(parser)
    _lake_arguments(parser, required=False)
    args = parser.parse_args(argv)
    _check_lake_arguments(parser, args)
    if (args.days is None) == (args.start is None or args.end is None) or (args.days and (args.start or args.end)):
        parser.error("give either --days N or both --start and --end")
    if args.days is not None and args.days < 1:
        parser.error("--days must be at least 1")
    secret = os.environ.get("AMPLITUDE_SECRET_KEY", "")
    try:
        if not args.api_key:
            raise AmplitudeError("an API key is needed: --api-key or $AMPLITUDE_API_KEY")
        if not secret:
            raise AmplitudeError(NO_SECRET)
        if args.days is not None:
            total = hour_count(*days_range(datetime.now(UTC), args.days))
            with tqdm(total=total, unit="h", desc="upload hours") as bar:
                result = sync_project(args.api_key, secret, region=args.region, base_url=args.base_url,
                                      cache_dir=args.cache_dir, window_hours=args.window_hours, days=args.days,
                                      progress=bar.update)
                bar.update(bar.total - bar.n)  # the hours stored already count as done
            print(f"amplitude-sync: {result.summary()}")
            if args.lake:
                _publish(HourStore(args.cache_dir, _base_url(args), args.api_key), args, result.first, result.last)
            return 0
        store = _store(args)
        client = ExportClient(args.api_key, secret, base_url=_base_url(args))
        with tqdm(total=hour_count(args.start, args.end), unit="h", desc="upload hours") as bar:
            report = fill(store, client, args.start, args.end, now=datetime.now(UTC),
                          window_hours=args.window_hours, progress=bar.update)
            bar.update(bar.total - bar.n)
        if report.windows:  # Amplitude accepted the secret
            store.remember_secret(secret)
        print(f"{report.hours_wanted} hours in range, {report.hours_downloaded} downloaded in "
              f"{len(report.windows)} requests, {report.events} events stored in {store.where}")
        if args.lake:
            _publish(store, args, args.start, args.end)
    except (AmplitudeError, OSError) as exc:
        print(f"amplitude-sync: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _publish(store: HourStore, args: argparse.Namespace, first: datetime, last: datetime) -> None:
    """Publish the lake partitions the synced upload hours ``first..last`` can touch, then refresh Spark."""
    report = publish(store, args.lake, late_hours=args.late_hours, first=first, last=last)
    print(f"amplitude-sync: {report.summary()}")
    _refresh(args, "amplitude-sync")


def _refresh(args: argparse.Namespace, program: str) -> None:
    """Refresh the Spark Thrift Server of ``--spark``, if given; a warning (the lake stays published) if it fails."""
    if not args.spark:
        return
    try:
        print(f"{program}: {refresh_spark(args.spark)}")
    except SparkRefreshError as exc:
        print(f"{program}: warning: {exc}", file=sys.stderr)


def load_main(argv: list[str] | None = None) -> int:
    """Load an Amplitude export zip (Export API, UI download or S3 export format) into the store.

    The project's secret key ($AMPLITUDE_SECRET_KEY, never given on the command line) is required: the store
    keeps a verifier of it, and queries (offline ones too) must present it. ``--open-to-any-secret`` instead
    marks the store readable with any secret key: for sample data only (the demo)."""
    parser = argparse.ArgumentParser(prog="amplitude-load", description=load_main.__doc__)
    parser.add_argument("archive", type=Path, help="the .zip file")
    parser.add_argument("--start", type=parse_time, help="first upload hour the file covers (marks empty hours)")
    parser.add_argument("--end", type=lambda text: parse_time(text, end=True), help="last upload hour it covers")
    parser.add_argument("--open-to-any-secret", action="store_true",
                        help="let any secret key read this store (sample data only); without it the project's "
                             "secret key must be in $AMPLITUDE_SECRET_KEY")
    _project_arguments(parser)
    args = parser.parse_args(argv)
    secret = os.environ.get("AMPLITUDE_SECRET_KEY", "")
    if not secret and not args.open_to_any_secret:
        parser.error("the project's secret key is needed in $AMPLITUDE_SECRET_KEY (queries must present it to read "
                     "the store), or --open-to-any-secret to let any secret key read it (sample data only)")
    if secret and args.open_to_any_secret:
        parser.error("give either $AMPLITUDE_SECRET_KEY or --open-to-any-secret, not both")
    try:
        store = _store(args)
        events = load_archive(store, args.archive, args.start, args.end)
        if args.open_to_any_secret:
            store.open_to_any_secret()
        else:
            store.remember_secret(secret)
    except (AmplitudeError, OSError) as exc:
        print(f"amplitude-load: error: {exc}", file=sys.stderr)
        return 2
    print(f"{events} events loaded into {store.where}" + (" (open to any secret key)" if args.open_to_any_secret
                                                           else ""))
    return 0


def lake_main(argv: list[str] | None = None) -> int:
    """The lake: ``publish`` it from the hour store (every stored hour), or print an engine's ``ddl`` for it."""
    parser = argparse.ArgumentParser(prog="amplitude-lake", description=lake_main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    publishing = commands.add_parser("publish", help="publish every stored hour's partitions that changed")
    _project_arguments(publishing)
    _lake_arguments(publishing, required=True)
    statements = commands.add_parser("ddl", help="print the statements that define the lake's tables")
    statements.add_argument("--engine", required=True, choices=ENGINES)
    statements.add_argument("--schema", default="amplitude", help="database/schema of the tables (default amplitude)")
    statements.add_argument("lake", help="the lake: a folder or an object storage URI")
    args = parser.parse_args(argv)
    if args.command == "ddl":
        print(script(args.lake, args.engine, args.schema), end="")
        return 0
    _check_lake_arguments(parser, args)
    try:
        report = publish(_store(args), args.lake, late_hours=args.late_hours)
    except (AmplitudeError, OSError) as exc:
        print(f"amplitude-lake: error: {exc}", file=sys.stderr)
        return 2
    print(f"amplitude-lake: {report.summary()}")
    _refresh(args, "amplitude-lake")
    return 0
