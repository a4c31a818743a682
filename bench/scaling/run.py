"""How cost grows (issue 17): whole-process throughput of the bundled
detectors as wasm, with a warm compile cache, against window size, number of
detectors, fields per record and pipelines in one host; then the same files
beside truthound, the Python tool people would otherwise use. Prints a
markdown section for BENCHMARKS.md on stdout.

    python3 bench/scaling/run.py [--runs 3] [--records 500000]

Each figure is the median over the runs of records / wall seconds of the
whole process (start-up included), measured here around the process.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOST = os.path.join(ROOT, "target/release/clean-host")
# Each run copies a warm cache into its data dir: the hosts must keep it there.
os.environ.pop("CLEAN_HOST_PLUGIN_CACHE", None)
PLUGINS = os.path.join(ROOT, "plugins")
OUT = os.path.join(ROOT, "target/bench/scaling")
BUNDLED = ["completeness", "drift", "duplicates", "freshness", "outliers", "schema", "validity", "volume"]
# Detector subsets, cheapest first (so the costlier ones come in last).
SUBSETS = {1: ["schema"], 4: ["schema", "volume", "freshness", "completeness"], 8: BUNDLED}


def written(path, write):
    """`path`, made by `write(file)` once: into a temporary file renamed when
    complete, so an interrupted run leaves nothing half-written to reuse."""
    if not os.path.exists(path):
        with open(path + ".part", "w") as f:
            write(f)
        os.replace(path + ".part", path)
    return path


def wide_records(f, fields, records, seed=11):
    """JSON lines of `fields` fields into `f`: an RFC 3339 time, then numbers
    (normal and heavy-tailed), integers, categories, booleans and id-like
    text in turn, 3% of values null."""
    rng = random.Random(seed)
    categories = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    start = 1_764_000_000.0
    for r in range(records):
        t = start + r / 1000.0
        rec = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"}
        for i in range(1, fields):
            kind = i % 6
            if rng.random() < 0.03:
                value = None
            elif kind == 0:
                value = round(rng.gauss(100.0, 15.0), 3)
            elif kind == 1:
                value = round(rng.paretovariate(1.5), 3)
            elif kind == 2:
                value = rng.randint(0, 10_000)
            elif kind == 3:
                value = rng.choice(categories)
            elif kind == 4:
                value = rng.random() < 0.2
            else:
                value = f"id-{rng.getrandbits(40):x}"
            rec[f"f{i:02d}"] = value
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def warm_cache(plugins=PLUGINS, name="warm"):
    warm = os.path.join(OUT, name)
    shutil.rmtree(warm, ignore_errors=True)
    subprocess.run([HOST, "plugin", "list", "--json", "--plugins", plugins, "--data-dir", warm], check=True, capture_output=True)
    return warm


def sixteen_detectors():
    """A plugins folder of 16 detectors: the 8 bundled ones and 8 made with
    `clean-host plugin new` (the Rust template: each column's share of
    absent rows), built as a user builds them."""
    folder = os.path.join(OUT, "plugins-16")
    projects = os.path.join(OUT, "projects")
    names = [f"absent-{i}" for i in range(1, 9)]
    os.makedirs(folder, exist_ok=True)
    os.makedirs(projects, exist_ok=True)
    for name in names:
        if os.path.exists(os.path.join(folder, name + ".wasm")):
            continue
        shutil.rmtree(os.path.join(projects, name), ignore_errors=True)
        subprocess.run([HOST, "plugin", "new", name, "--lang", "rust"], cwd=projects, check=True, capture_output=True)
        # One target dir for all of them, so the SDK builds once.
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "plugins/target"))
        subprocess.run([HOST, "plugin", "build", name, "--plugins", folder], cwd=projects, env=env, check=True, stdout=subprocess.DEVNULL)
    for name in BUNDLED:
        shutil.copy(os.path.join(PLUGINS, name + ".wasm"), folder)
    return folder


def run(warm, args, config=None, plugins=PLUGINS):
    """One run on a fresh data dir with the warm cache: (records/s, peak RSS MiB)."""
    data = os.path.join(OUT, "data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    for name in ("cache", "cache.key"):
        src = os.path.join(warm, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(data, name))
    cmd = [HOST, "--plugins", plugins, "--data-dir", data, "--quiet"] + args
    if config:
        path = os.path.join(OUT, "config.toml")
        with open(path, "w") as f:
            f.write(config)
        cmd += ["--config", path]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stderr.strip().splitlines()[-1])
    return summary["records"] / wall, summary["peak_rss_mib"]


def median_of(runs, warm, args, config=None, plugins=PLUGINS):
    results = [run(warm, args, config, plugins) for _ in range(runs)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def pipelines_config(n, source, detectors=None, window=1000):
    text = ""
    for i in range(n):
        text += f'[[pipelines]]\nname = "p{i:02d}"\nsource = "{source}"\n'
        if detectors is not None:
            text += "detectors = [" + ", ".join(f'"{d}"' for d in detectors) + "]\n"
        text += f'[pipelines.window]\nkind = "count"\nsize = {window}\n\n'
    return text


def peers(runs, warm, files, rows):
    """clean-host beside truthound 3.2.0's StreamingValidator (bench/peers),
    on the same files, alternating."""
    setup = subprocess.run(["bash", os.path.join(ROOT, "bench/peers/setup.sh")], stdout=subprocess.PIPE, text=True)
    if setup.returncode != 0:
        # Everything measured before stays; the table says why it is missing.
        rows.append("\n### Side by side with truthound 3.2.0\n\nNot measured: installing truthound from PyPI failed (see bench/peers/setup.sh).")
        return
    py = setup.stdout.strip()
    script = os.path.join(ROOT, "bench/peers/truthound_stream.py")
    rows.append(
        "\n### Side by side with truthound 3.2.0\n\n"
        "truthound's `StreamingValidator` with validators `null,outlier,duplicate,type,unique` on 1000-record batches "
        f"(`{os.path.relpath(script, ROOT)}`: its time covers reading, parsing and validating, not its start-up; "
        "clean-host's includes start-up), clean-host with all 8 bundled detectors on 1000-record windows.\n\n"
        "| file | records | clean-host records/s | truthound records/s | clean-host / truthound |\n|---|---:|---:|---:|---:|"
    )
    for label, path in files:
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(run(warm, ["--source", path, "--window", "1000"])[0])
            done = subprocess.run([py, script, path, "--batch", "1000"], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"truthound failed on {path}:\n{done.stderr[-2000:]}")
            theirs.append(json.loads(done.stdout.strip().splitlines()[-1])["records_per_second"])
        with open(path) as f:
            records = sum(1 for _ in f)
        ours_rate, theirs_rate = statistics.median(ours), statistics.median(theirs)
        rows.append(f"| {label} | {records:,} | {ours_rate:,.0f} | {theirs_rate:,.0f} | **{ours_rate / theirs_rate:.0f}x** |")
        print(f"scaling: truthound on {label}: {theirs_rate:,.0f} records/s against {ours_rate:,.0f}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=500_000)
    a = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    orders = written(os.path.join(OUT, f"orders-{a.records}.jsonl"), lambda f: subprocess.run([HOST, "generate", "--records", str(a.records)], stdout=f, check=True))
    warm = warm_cache()
    rows = []

    def table(title, header, cases):
        rows.append(f"\n### {title}\n\n| {header} | records/s | peak RSS (MiB) |\n|---|---:|---:|")
        for label, args, config, *plugins in cases:
            folder = plugins[0] if plugins else PLUGINS
            rate, rss = median_of(a.runs, warm if folder == PLUGINS else warm_cache(folder, "warm-16"), args, config, folder)
            rows.append(f"| {label} | {rate:,.0f} | {rss:.0f} |")
            print(f"scaling: {title}: {label}: {rate:,.0f} records/s", file=sys.stderr)

    table(
        f"Window size ({a.records:,} generated orders, all 8 detectors)",
        "rows per window",
        [(f"{w:,}", ["--source", orders, "--window", str(w)], None) for w in (100, 1000, 10_000)],
    )
    table(
        f"Detectors ({a.records:,} generated orders, 1000-row windows)",
        "detectors",
        [(f"{n} ({', '.join(d) if n < 8 else 'all bundled'})", [], pipelines_config(1, orders, d)) for n, d in SUBSETS.items()]
        + [("16 (all bundled and 8 made by `plugin new`: absent share per column)", [], pipelines_config(1, orders), sixteen_detectors())],
    )
    wide = a.records // 5
    cases = []
    for fields in (5, 20, 80):
        path = written(os.path.join(OUT, f"wide-{fields}-{wide}.jsonl"), lambda f: wide_records(f, fields, wide))
        cases.append((f"{fields}", ["--source", path, "--window", "1000"], None))
    table(f"Fields per record ({wide:,} records of mixed types, 3% nulls, all 8 detectors)", "fields", cases)
    per = a.records // 5
    with open(orders) as src:
        part = written(os.path.join(OUT, f"orders-{per}.jsonl"), lambda dst: dst.writelines(line for _, line in zip(range(per), src)))
    table(
        f"Pipelines in one host (each reads its own {per:,} orders, all 8 detectors; records/s of all together)",
        "pipelines",
        [(f"{n}", [], pipelines_config(n, part)) for n in (1, 10, 40)],
    )
    # As many of the wide records as orders: on 100,000 the host's start-up
    # was a fifth of its time, and outliers and drift were still learning.
    mixed = written(os.path.join(OUT, f"wide-20-{a.records}.jsonl"), lambda f: wide_records(f, 20, a.records))
    peers(a.runs, warm, [("generated orders (12 fields)", orders), ("mixed types, 20 fields", mixed)], rows)
    print("## How cost grows (issue 17)\n")
    print(
        f"Command: `scripts/bench-scaling` (RUNS={a.runs}). Whole process with a warm compile cache, start-up included: "
        "records over the wall time measured around the process, median of the runs; the wasm detectors throughout."
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
