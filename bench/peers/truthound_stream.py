"""Peer benchmark: truthound 3.2.0 (PyPI) streaming validation of a JSON-lines file.

Measures end-to-end throughput of truthound's ``StreamingValidator`` with the
validators ``null,outlier,duplicate,type,unique`` on micro-batches of
``--batch`` records (default 1000), for comparison with the clean-host figure.

    bash bench/peers/setup.sh          # prints the venv python
    $(bash bench/peers/setup.sh) bench/peers/truthound_stream.py FILE [--batch 1000] [--limit N] [--persist]

Prints one JSON line on stdout:
    {"tool": "truthound 3.2.0", "records": N, "seconds": S, "records_per_second": R,
     "batches": B, "issues": I}

API used (read from the installed package, truthound 3.2.0):
  * truthound/realtime/base.py: ``StreamingValidator(validators=[names], config=StreamingConfig(...))``
    and ``StreamingValidator.validate_batch(batch: polars.DataFrame) -> BatchResult``;
    internally each batch runs ``truthound.api.check(batch, validators=names)``.
  * Names resolve through ``truthound.validators.get_validator`` ("null" -> NullValidator,
    "outlier", "duplicate", "type", "unique" likewise).
  * ``issues`` = ``StreamingValidator.get_stats()["total_issues"]``, i.e. the sum over batches of
    ``len(BatchResult.issues)``; one issue is one (column, validator) finding per batch, not a row count.
"""

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time

import polars as pl
from truthound.realtime import StreamingConfig, StreamingValidator
from truthound.validators import get_validator

VALIDATORS = ["null", "outlier", "duplicate", "type", "unique"]


def flatten(df: pl.DataFrame) -> pl.DataFrame:
    """Nested objects arrive from polars as Struct columns; flatten them ourselves to
    "geo.lat"-style columns (recursively), identically for every batch. truthound itself
    does not unnest structs. Lists stay as List columns."""
    while True:
        structs = [c for c, t in df.schema.items() if isinstance(t, pl.Struct)]
        if not structs:
            return df
        df = df.with_columns(
            pl.col(c).struct.rename_fields([f"{c}.{f.name}" for f in df.schema[c].fields])
            for c in structs
        ).unnest(structs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None, help="stop after N records")
    ap.add_argument("--persist", action="store_true",
                    help="keep truthound's zero-config default of writing a run JSON and an "
                         "HTML doc per batch (into a temp workspace); off by default")
    args = ap.parse_args()
    path = os.path.abspath(args.file)

    # truthound.check() auto-discovers a project root from the cwd and, by default, creates
    # ./.truthound and persists a run JSON + HTML docs for every batch. Run inside a throwaway
    # directory whose truthound.yaml switches persistence off (unless --persist), so we
    # measure validation and never write into the caller's tree.
    work = tempfile.TemporaryDirectory(prefix="truthound-bench-")
    with open(os.path.join(work.name, "truthound.yaml"), "w") as f:
        p = "true" if args.persist else "false"
        f.write(f"context:\n  persist_runs: {p}\n  persist_docs: {p}\n  auto_create_baseline: false\n")
    os.chdir(work.name)

    # Start-up excluded from the timing: imports and the validator registry load (the first
    # get_validator() imports truthound's validator modules; without numpy some optional
    # ones log "Failed to load module ..." warnings, irrelevant to these five; silenced).
    logging.getLogger("truthound").setLevel(logging.ERROR)
    for name in VALIDATORS:
        get_validator(name)  # raises on an unknown name
    # error_handling="fail": the default "skip" would swallow errors and report 0 issues.
    validator = StreamingValidator(
        validators=VALIDATORS,
        config=StreamingConfig(batch_size=args.batch, error_handling="fail"),
    )

    # Timed: reading + JSON parsing (polars read_ndjson per batch) + flattening + validation.
    start = time.perf_counter()
    records = 0
    buf: list[bytes] = []

    def flush() -> None:
        validator.validate_batch(flatten(pl.read_ndjson(io.BytesIO(b"".join(buf)))))
        buf.clear()

    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            if args.limit is not None and records >= args.limit:
                break
            buf.append(line)
            records += 1
            if len(buf) >= args.batch:
                flush()
    if buf:
        flush()
    seconds = time.perf_counter() - start

    stats = validator.get_stats()
    print(json.dumps({
        "tool": "truthound 3.2.0",
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_second": round(records / seconds, 1) if seconds > 0 else None,
        "batches": stats["batch_count"],
        "issues": stats["total_issues"],
    }))
    work.cleanup()


if __name__ == "__main__":
    sys.exit(main())
