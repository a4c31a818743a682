"""Drift: has a numeric column's distribution moved away from what it was?

The first windows (`warmup_windows`) build a reference sample per numeric
column (timestamps excluded: time always moves). After that, each window is
compared with the reference by the Population Stability Index over the
reference's deciles and by the two-sample Kolmogorov-Smirnov test. A column
drifts when both agree, PSI above `psi_threshold` and the KS p-value below
`ks_alpha`, so a small window or a noisy column stays quiet.
"""

import json
import math
import random
from bisect import bisect_left, bisect_right

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

import clean_host as ch

DEFAULTS = {"warmup_windows": 5, "reference_size": 2000, "psi_threshold": 0.25, "ks_alpha": 0.001, "min_rows": 100, "columns": []}


def psi(reference_shares, values, edges):
    """Population Stability Index of `values` against the reference's shares of the bins cut at `edges`."""
    counts = [0] * (len(edges) + 1)
    for x in values:
        counts[bisect_left(edges, x)] += 1
    shares = [max(c / len(values), 1e-4) for c in counts]
    return sum((b - a) * math.log(b / a) for a, b in zip(reference_shares, shares))


def ks(reference, values):
    """Two-sample Kolmogorov-Smirnov distance of two sorted lists, and its asymptotic p-value."""
    na, nb = len(reference), len(values)
    d = max(abs(bisect_right(reference, x) / na - bisect_right(values, x) / nb) for x in reference + values)
    n = na * nb / (na + nb)
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(max(p, 0.0), 1.0)


class Reference:
    """A column's reference sample; sorted, with its deciles, once learned."""

    def __init__(self, sample):
        self.sample = sample
        self.sorted = sorted(sample)
        n = len(self.sorted)
        self.edges = sorted(set(self.sorted[n * q // 10] for q in range(1, 10)))
        counts = [0] * (len(self.edges) + 1)
        for x in self.sorted:
            counts[bisect_left(self.edges, x)] += 1
        self.shares = [max(c / n, 1e-4) for c in counts]


class Drift:
    """The detector's state and logic (see `Detector` below for why apart)."""

    def __init__(self):
        self.config = dict(DEFAULTS)
        self.windows = 0
        self.samples = {}
        self.references = {}
        self.rng = random.Random(1)

    def describe(self):
        return ch.info(
            "drift", "0.1.0",
            "Distribution drift per numeric column: PSI and Kolmogorov-Smirnov against a learned reference",
            [("psi", "Population Stability Index against the reference"), ("ks_d", "Kolmogorov-Smirnov distance to the reference")],
            json.dumps({"type": "object", "properties": {k: {} for k in DEFAULTS}}),
        )

    def configure(self, config):
        given = json.loads(config or "{}")
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            raise Err(f"unknown config key(s): {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
        self.config.update(given)

    def analyze(self, batch):
        self.windows += 1
        findings, metrics = [], []
        wanted = set(self.config["columns"])
        learning = self.windows <= self.config["warmup_windows"]
        for column in batch.columns:
            if (wanted and column.name not in wanted) or (not wanted and ch.is_timestamp(column)):
                continue
            values = ch.numeric(column)
            if values is None or len(values) < self.config["min_rows"]:
                continue
            if learning:
                self.learn(column.name, values)
                continue
            reference = self.references.get(column.name)
            if reference is None:
                continue
            p = psi(reference.shares, values, reference.edges)
            d, pvalue = ks(reference.sorted, sorted(values))
            metrics.append(ch.metric("psi", p, column.name))
            metrics.append(ch.metric("ks_d", d, column.name))
            limit = self.config["psi_threshold"]
            if p > limit and pvalue < self.config["ks_alpha"]:
                findings.append(ch.finding(
                    "psi", p, limit, "critical" if p > 2 * limit else "warning",
                    f"'{column.name}' drifted from its reference: PSI {p:.3f}, KS distance {d:.3f} (p={pvalue:.2g})",
                    column.name,
                ))
        if learning and self.windows == self.config["warmup_windows"]:
            self.references = {name: Reference(s) for name, s in self.samples.items() if len(s) >= self.config["min_rows"]}
        return types.Analysis(findings=findings, metrics=metrics)

    def learn(self, name, values):
        sample = self.samples.setdefault(name, [])
        limit = self.config["reference_size"]
        seen = self.windows * len(values)
        for x in values:
            if len(sample) < limit:
                sample.append(x)
            elif self.rng.randrange(seen) < limit:
                sample[self.rng.randrange(limit)] = x

    def snapshot(self):
        return ch.encode_state({"windows": self.windows, "samples": self.samples})

    def restore(self, state):
        s = ch.decode_state(state)
        if s:
            self.windows, self.samples = s["windows"], s["samples"]
            if self.windows >= self.config["warmup_windows"]:
                self.references = {n: Reference(v) for n, v in self.samples.items() if len(v) >= self.config["min_rows"]}


DRIFT = Drift()


class Detector(exports.Detector):
    """componentize-py makes an object of this class per exported function,
    so the state lives in the module (`DRIFT`), not on `self`."""

    def describe(self):
        return DRIFT.describe()

    def configure(self, config):
        DRIFT.configure(config)

    def analyze(self, batch):
        return DRIFT.analyze(batch)

    def snapshot(self):
        return DRIFT.snapshot()

    def restore(self, state):
        DRIFT.restore(state)
