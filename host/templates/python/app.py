"""{{name}}: flags a window where a column is mostly absent (null or missing).

Change `analyze` to check what matters to you. `clean_host.py` beside this
file has the helpers; `wit/clean-host.wit` is the contract.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

import clean_host as ch


class Plugin:
    """The detector's state and logic (see `Detector` below for why apart)."""

    def __init__(self):
        self.max_absent_share = 0.5

    def describe(self):
        return ch.info("{{name}}", "0.1.0", "Columns that are mostly null or missing",
                       [("absent_share", "Share of a column's rows that are null or missing")])

    def configure(self, config):
        given = json.loads(config or "{}")
        unknown = sorted(set(given) - {"max_absent_share"})
        if unknown:
            raise Err(f"unknown config key(s): {', '.join(unknown)}")
        self.max_absent_share = float(given.get("max_absent_share", self.max_absent_share))

    def analyze(self, batch):
        findings, metrics = [], []
        for column in batch.columns:
            absent = sum(1 for s in column.validity if s in (ch.NULL, ch.MISSING))
            share = absent / max(batch.row_count, 1)
            metrics.append(ch.metric("absent_share", share, column.name))
            if share > self.max_absent_share:
                findings.append(ch.finding("absent_share", share, self.max_absent_share, "warning",
                                           f"{share:.0%} of '{column.name}' is null or missing", column.name))
        return types.Analysis(findings=findings, metrics=metrics)


PLUGIN = Plugin()


class Detector(exports.Detector):
    """componentize-py makes an object of this class per exported function,
    so state lives in the module (`PLUGIN`), not on `self`."""

    def describe(self):
        return PLUGIN.describe()

    def configure(self, config):
        PLUGIN.configure(config)

    def analyze(self, batch):
        return PLUGIN.analyze(batch)

    def snapshot(self):
        return b""

    def restore(self, state):
        pass
