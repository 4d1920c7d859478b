"""The shard cache of an output_dir: list it, collect what no kept run uses (pipelines/core/shards.py).

    python -m flows.cache list [--output_dir runs] [--json]
    python -m flows.cache gc   [--output_dir runs] [--keep RUN_ID ...] [--dry-run] [--min-age-minutes 60]

A kept run is a run directory under output_dir (delete one to release its shards), or only the runs named with
--keep. gc removes the shards none of them lists in its shards.json, and temporary files that interrupted writes
left (older than --min-age-minutes). Shards are a cache: a removed one is recomputed by the next run needing it.
No Prefect, no model: it answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def listing_text(info: dict) -> str:
    fams = "; ".join(f"{f} {v['files']:,} files {size(v['bytes'])}" for f, v in info["families"].items())
    lines = [f"cache {info['cache_dir']}: {info['files']:,} files, {size(info['bytes'])}" + (f" ({fams})" if fams
                                                                                             else "")]
    lines.append(f"runs ({len(info['runs'])}):")
    for r in info["runs"]:
        state = "finished" if r["finished"] else "unfinished"
        if r["released"]:
            lines.append(f"  {r['run_id']}  {r['kind']}  {state}  released its shards (cache.cleanup)")
        elif r["recorded"]:
            lines.append(f"  {r['run_id']}  {r['kind']}  {state}  shards {r['shards_present']:,}/"
                         f"{r['shards_planned']:,} present  {size(r['bytes'])}")
        else:
            lines.append(f"  {r['run_id']}  {state}  no shards.json (made before runs recorded their shards): "
                         "references nothing")
    u, left = info["unreferenced"], info["leftovers"]
    lines.append(f"unreferenced: {u['files']:,} files, {size(u['bytes'])}; left by interrupted writes: "
                 f"{left['files']:,} files, {size(left['bytes'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.cache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="files and bytes per family, the runs and what they reference")
    gc = sub.add_parser("gc", help="remove the shards no kept run references")
    for s in (ls, gc):
        s.add_argument("--output_dir", default="runs", help="the runs' output_dir (its .cache is the cache)")
        s.add_argument("--json", action="store_true", help="print JSON")
    gc.add_argument("--keep", nargs="+", metavar="RUN_ID", help="only these runs count as kept")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    gc.add_argument("--min-age-minutes", type=float, default=60.0,
                    help="leftover temporary files younger than this may be writes under way: kept")
    args = p.parse_args(argv)

    from pipelines.core import shards
    out = Path(args.output_dir)
    if not out.is_dir():
        print(f"error: output_dir {out} is not a directory", file=sys.stderr)
        return 2
    if args.command == "list":
        info = shards.list_cache(out)
        print(json.dumps(info, indent=1) if args.json else listing_text(info))
        return 0
    try:
        done = shards.collect(out, keep=args.keep, dry_run=args.dry_run, min_age_s=args.min_age_minutes * 60)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(done, indent=1))
    else:
        verb = "would remove" if done["dry_run"] else "removed"
        print(f"{verb} {done['removed_files']:,} files ({size(done['removed_bytes'])}) no kept run references; "
              f"{done['kept_files']:,} files stay, {done['kept_runs']} runs kept")
        if done["unrecorded_runs"]:
            print(f"note: {len(done['unrecorded_runs'])} runs have no shards.json and protect nothing: "
                  f"{', '.join(done['unrecorded_runs'][:5])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
