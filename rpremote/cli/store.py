"""``rpremote store info|sweep``: the offload store that big arguments and results go through.

``info`` says where the configured store is, where its credentials come from (never their
values) and whether it answers. ``sweep`` removes pieces unused for a while (default 7 days)
under the store's prefix, and nothing else: not objects outside the prefix, not names that are
not pieces. The client also sweeps on its own, at most once a day per store
(``client/stores.py``). The local emulator's own store needs neither: it removes unused pieces
itself (``rpremote serve --blob-ttl``).
"""

from __future__ import annotations

import argparse
import sys

from .. import config
from ..errors import ConfigError, RpremoteError

DEFAULT_OLDER_THAN = "7d"


def _store(url: str | None):
    from ..client.stores import make

    if url:
        from ..s3 import parse_store

        location, where = parse_store(url, setting="--store", require_dc=False), "--store"
    else:
        location, where = config.store_choice()
        if location is None:
            raise ConfigError("no offload store is configured: set RPREMOTE_STORE=s3://BUCKET"
                              "[/PREFIX] (or runpod-volume://VOLUME_ID[/PREFIX]) or pass --store "
                              "URL. (The local emulator's own store removes unused pieces "
                              "itself: rpremote serve --blob-ttl.)")
    return make(location, where)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def info(url: str | None) -> int:
    store = _store(url)
    print(store.describe())
    try:
        store.check()
    except ConfigError as e:
        print(f"does not answer as it should: {e}", file=sys.stderr)
        return 1
    print("answers: yes (the bucket is there and the credentials are accepted)")
    return 0


def sweep(url: str | None, older_than: str, dry_run: bool) -> int:
    from ..s3 import REFRESH_AGE_S, age_seconds

    try:
        seconds = age_seconds(older_than)
    except ConfigError as e:
        raise ConfigError(f"--older-than: {e}") from None
    store = _store(url)
    store.check()
    pieces, size = store.sweep(seconds, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    print(f"{verb} {pieces} piece{'s' if pieces != 1 else ''} ({_size(size)}) unused for "
          f"{older_than} or more from {store.location.url()}")
    if seconds < REFRESH_AGE_S:
        print("note: a piece's age counts from its upload and is renewed by use only once "
              "it is a day old, so --older-than under a day can take pieces still in use "
              "(the next call that needs one uploads it again; a queued job would fail)",
              file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rpremote store",
                                description="The offload store big arguments and results go "
                                            "through (RPREMOTE_STORE).")
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("info", help="where the store is, where its credentials come from, "
                                    "and whether it answers")
    i.add_argument("--store", default=None, metavar="URL",
                   help="s3://BUCKET[/PREFIX] or runpod-volume://VOLUME_ID[/PREFIX] "
                        "(default: $RPREMOTE_STORE)")
    s = sub.add_parser("sweep", help="remove pieces unused for a while (only under the prefix)")
    s.add_argument("--older-than", default=DEFAULT_OLDER_THAN, metavar="DURATION",
                   help="30m, 12h, 7d, ... (default 7d)")
    s.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    s.add_argument("--store", default=None, metavar="URL",
                   help="s3://BUCKET[/PREFIX] or runpod-volume://VOLUME_ID[/PREFIX] "
                        "(default: $RPREMOTE_STORE)")
    args = p.parse_args(argv)
    try:
        if args.command == "info":
            return info(args.store)
        return sweep(args.store, args.older_than, args.dry_run)
    except RpremoteError as e:
        print(f"rpremote store {args.command}: {e}", file=sys.stderr)
        return 1
