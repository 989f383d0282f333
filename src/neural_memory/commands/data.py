"""``neural-memory data list|download|path``: the named datasets of :mod:`neural_memory.datasets`."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Named text datasets, downloaded on demand into a cache ($NEURAL_MEMORY_CACHE, default
~/.cache/neural-memory/datasets) and checked before use: tinyshakespeare against the SHA-256 in the registry;
enwik8 and wikitext-103, for which no digest is published, by trust on first use (the first download's
SHA-256 is printed and pinned in the cache's manifest.json, and later downloads must match it; --sha256 HEX
checks the first download against a digest you trust). `neural-memory train KIND --dataset NAME` trains on
one. NEURAL_MEMORY_DATASET_URL_<NAME> replaces a dataset's URL (a mirror must serve the same bytes)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="list, download and locate the named datasets (tinyshakespeare, enwik8, wikitext-103)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="cache directory (default $NEURAL_MEMORY_CACHE or ~/.cache/neural-memory/datasets)",
    )
    actions.add_parser("list", parents=[cache], help="every dataset: size, cached or not, its digest")
    download = actions.add_parser(
        "download", parents=[cache], help="download a dataset into the cache (nothing to do if cached)"
    )
    download.add_argument("name", metavar="NAME", help="dataset name (see `neural-memory data list`)")
    download.add_argument(
        "--sha256", metavar="HEX", help="the SHA-256 the download must have (of the .zip for an archive)"
    )
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    path = actions.add_parser("path", parents=[cache], help="print the cached file's path (error if absent)")
    path.add_argument("name", metavar="NAME", help="dataset name (see `neural-memory data list`)")
    parser.set_defaults(run=run)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"neural-memory data: error: {message}")


def _bytes(n: int | None) -> str:
    return "size unknown" if n is None else f"{n:,} bytes"


def _list(cache_dir: Path | None) -> None:
    from neural_memory.datasets import DATASETS, cache_directory, read_manifest

    cache = cache_directory(cache_dir)
    entries = read_manifest(cache)
    print(f"cache: {cache}")
    for name, spec in DATASETS.items():
        entry = entries.get(name)
        target = cache / spec.file_name
        cached = (
            entry is not None
            and target.is_file()
            and (spec.sha256 is None or entry.get("download_sha256") == spec.sha256)
        )
        if cached:
            state = f"cached, {_bytes(entry['size'])}: {target}"
        else:
            download = f"download {_bytes(spec.size)}"
            if spec.member is not None:
                download += f" (zip; member {spec.member}, {_bytes(spec.member_size)})"
            state = f"not cached; {download}"
        if spec.sha256 is not None:
            digest = f"sha256 {spec.sha256} (registry)"
        elif entry is not None and entry.get("download_sha256"):
            digest = (
                f"sha256 {entry['download_sha256']} (pinned {entry.get('pinned')}, "
                f"{entry.get('digest_source')})"
            )
        else:
            digest = "sha256 not published: the first download is trusted and pinned (trust on first use)"
        print(f"{name}: {state}")
        print(f"    {digest}")
        print(f"    {spec.description}; {spec.license}")


def run(args: argparse.Namespace) -> int:
    from neural_memory.datasets import cached_entry, dataset_path

    try:
        if args.action == "list":
            _list(args.cache_dir)
        elif args.action == "path":
            print(dataset_path(args.name, cache_dir=args.cache_dir, download=False))
        else:
            progress = False if args.no_progress else None
            path = dataset_path(
                args.name, cache_dir=args.cache_dir, progress=progress, expected_sha256=args.sha256
            )
            entry = cached_entry(args.name, args.cache_dir) or {}
            print(path)
            print(
                f"{_bytes(entry.get('size'))}, sha256 {entry.get('sha256')}; download sha256 "
                f"{entry.get('download_sha256')} ({entry.get('digest_source')})"
            )
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from error
    return 0
