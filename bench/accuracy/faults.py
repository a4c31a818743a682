"""Faults written into a real dataset at known places.

Each is a data-quality fault, not a change the data makes by itself: gross
outliers lie beyond the column's whole range, a shift moves a column by more
than its windows' medians ever move, a volume drop loses four records in
five. Faults within the data's own variation cannot be told from it.

Each fault kind changes the records of one window (three for a
distribution shift, ten for a volume drop, so that whole count windows fall
inside it) and says which detector and column should catch it. Positions are line numbers of the written file, so the harness can
map them onto the windows the host reports (a volume drop removes records
and moves every later window's boundaries).
"""

import copy
import random

# (kind, windows it spans, what catches it: detector -> metrics, None for any)
KINDS = [
    ("nulls", 1),
    ("outliers", 1),
    ("duplicates", 1),
    ("type-change", 1),
    ("categories", 1),
    ("volume-drop", 10),
    ("shift", 3),
]


class Fault:
    def __init__(self, kind, window, column, catchers):
        self.kind = kind
        # The window (of the clean file) where it starts.
        self.window = window
        self.column = column
        # [(detector, column or None)] any of which catches it.
        self.catchers = catchers
        # Lines of the written file it covers: [first, last).
        self.lines = (0, 0)


def _column_stats(rows, column):
    """Median, interquartile range, minimum and maximum of a numeric column."""
    values = sorted(r[column] for r in rows if isinstance(r.get(column), (int, float)))
    if not values:
        return 0.0, 1.0, 0.0, 1.0
    q = lambda p: values[min(len(values) - 1, int(p * len(values)))]
    return q(0.5), max(q(0.75) - q(0.25), 1e-9), values[0], values[-1]


def plan(ds, first_window, spacing, rng):
    """Faults of every kind the dataset allows, round after round, one every
    `spacing` windows from `first_window` on."""
    windows = len(ds.rows) // ds.window
    faults = []
    window = first_window
    kinds = [k for k in KINDS if k[0] != "categories" or ds.categorical]
    while True:
        for kind, span in kinds:
            if window + span + 2 >= windows:
                return faults
            faults.append(_fault(ds, kind, window, rng))
            window += spacing + span - 1


def _fault(ds, kind, window, rng):
    numeric = ds.numeric[window % len(ds.numeric)] if ds.numeric else None
    if kind == "nulls":
        return Fault(kind, window, ds.null_column, [("completeness", ds.null_column)])
    if kind == "outliers":
        return Fault(kind, window, numeric, [("outliers", numeric), ("drift", numeric)])
    if kind == "duplicates":
        return Fault(kind, window, None, [("duplicates", None)])
    if kind == "type-change":
        return Fault(kind, window, numeric, [("schema", numeric), ("schema", "debug_note")])
    if kind == "categories":
        column = rng.choice(ds.categorical)
        return Fault(kind, window, column, [("validity", column), ("drift", column)])
    if kind == "volume-drop":
        return Fault(kind, window, None, [("volume", None)])
    return Fault(kind, window, numeric, [("drift", numeric), ("outliers", numeric)])


def inject(ds, faults, rng):
    """The dataset's rows with `faults` written in (a new list), each fault's
    `lines` set to the lines it covers in that list."""
    w = ds.window
    out = []
    by_window = {f.window: f for f in faults}
    i = 0
    windows = len(ds.rows) // w
    while i < windows:
        fault = by_window.get(i)
        if fault is None:
            out.extend(ds.rows[i * w:(i + 1) * w])
            i += 1
            continue
        span = dict(KINDS)[fault.kind]
        chunk = [copy.deepcopy(r) for r in ds.rows[i * w:(i + span) * w]]
        start = len(out)
        out.extend(_apply(ds, fault, chunk, rng))
        fault.lines = (start, len(out))
        i += span
    out.extend(ds.rows[windows * w:])
    return out


def _apply(ds, fault, chunk, rng):
    n = len(chunk)
    if fault.kind == "nulls":
        for r in rng.sample(chunk, int(0.4 * n)):
            r[fault.column] = None
        return chunk
    if fault.kind == "outliers":
        # Gross errors (a unit slip, a sentinel): beyond anything the column
        # ever holds, by one to five times its half-range.
        median, _, low, high = _column_stats(ds.rows, fault.column)
        for r in rng.sample(chunk, max(5, int(0.1 * n))):
            if rng.random() < 0.5:
                r[fault.column] = high + (high - median) * rng.uniform(1, 5)
            else:
                r[fault.column] = low - (median - low) * rng.uniform(1, 5)
        return chunk
    if fault.kind == "duplicates":
        k = max(5, int(0.2 * n))
        keep = chunk[: n - k]
        copies = [copy.deepcopy(r) for r in rng.sample(keep, k)]
        for c in copies:
            keep.insert(rng.randrange(len(keep) + 1), c)
        return keep
    if fault.kind == "type-change":
        for r in chunk:
            if rng.random() < 0.5 and r.get(fault.column) is not None:
                r[fault.column] = f"{r[fault.column]} units"
            r["debug_note"] = "retry"
        return chunk
    if fault.kind == "categories":
        for r in rng.sample(chunk, int(0.3 * n)):
            r[fault.column] = f"NEW-{rng.randrange(5)}"
        return chunk
    if fault.kind == "volume-drop":
        # Four records of five vanish for ten windows' worth of time, so that
        # whole count windows fall inside the drop.
        return [r for r in chunk if rng.random() < 0.2]
    # A distribution shift outside anything the column does by itself (a
    # unit or offset bug): it moves by the whole range of its windows'
    # medians in the clean data, plus its interquartile range.
    _, iqr, _, _ = _column_stats(ds.rows, fault.column)
    w = ds.window
    medians = []
    for start in range(0, len(ds.rows) - w + 1, w):
        present = sorted(r[fault.column] for r in ds.rows[start:start + w] if isinstance(r.get(fault.column), (int, float)))
        if present:
            medians.append(present[len(present) // 2])
    step = (max(medians) - min(medians)) + iqr if medians else iqr
    for r in chunk:
        v = r.get(fault.column)
        if isinstance(v, (int, float)):
            r[fault.column] = v + step
    return chunk
