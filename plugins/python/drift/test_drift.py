"""Unit tests of the drift detector, run natively on componentize-py's generated
bindings (see scripts/test): the statistics, the verdicts, config and state."""

import random

import pytest
from componentize_py_types import Err
from wit_world.imports import types

import app


def batch(values, seq=0, name="amount"):
    column = types.Column(name=name, values=types.ColumnValues_Float64(value=values), validity=b"")
    info = types.WindowInfo(pipeline="p", source="s", partition=0, kind=types.WindowKind.COUNT, start_ms=0, end_ms=0,
                            time_basis=types.TimeBasis.PROCESSING, closed_at_ms=0, first_offset=0, last_offset=0, seq=seq)
    return types.Batch(info=info, row_count=len(values), columns=[column], offsets=[], record_hashes=[], event_times=[])


def lognormal(rng, n, scale=1.0):
    return [rng.lognormvariate(3.2, 0.9) * scale for _ in range(n)]


def test_ks_and_psi_tell_the_same_from_the_moved():
    rng = random.Random(3)
    ref = app.Reference(lognormal(rng, 2000))
    same, moved = sorted(lognormal(rng, 1000)), sorted(lognormal(rng, 1000, 1.8))
    assert app.psi(ref.shares, same, ref.edges) < 0.05
    assert app.psi(ref.shares, moved, ref.edges) > 0.25
    d_same, p_same = app.ks(ref.sorted, same)
    d_moved, p_moved = app.ks(ref.sorted, moved)
    assert d_same < 0.06 and p_same > 0.001
    assert d_moved > 0.2 and p_moved < 1e-10


def test_learns_then_flags_only_a_moved_window():
    rng = random.Random(5)
    d = app.Drift()
    d.configure("{}")
    for seq in range(5):
        assert d.analyze(batch(lognormal(rng, 1000), seq)).findings == []
    assert d.analyze(batch(lognormal(rng, 1000), 5)).findings == []
    found = d.analyze(batch(lognormal(rng, 1000, 1.8), 6)).findings
    assert [(f.metric, f.column) for f in found] == [("psi", "amount")]


def test_state_survives_a_snapshot():
    rng = random.Random(7)
    d = app.Drift()
    for seq in range(5):
        d.analyze(batch(lognormal(rng, 1000), seq))
    restored = app.Drift()
    restored.restore(d.snapshot())
    assert restored.windows == 5 and set(restored.references) == {"amount"}
    assert restored.analyze(batch(lognormal(rng, 1000, 1.8), 5)).findings


def test_unknown_config_is_refused():
    with pytest.raises(Err):
        app.Drift().configure('{"psi_treshold": 1}')
