"""Conveniences for clean-host detectors written in Python (componentize-py).

Columns come as the WIT batch gives them (`wit_world.imports.types`); these
helpers read them the way a detector wants: numeric values of present rows,
the text of a row (decoded from the column's one byte buffer), findings and
metric values, and state as JSON for `snapshot` / `restore`.

A detector module defines `class Detector(exports.Detector)`. componentize-py
makes an object of that class for each exported function, so keep the
detector's state in one module-level object and let `Detector`'s methods call
it. An error is raised as `componentize_py_types.Err("message")`.
"""

import json

from wit_world.imports import types

PRESENT, NULL, MISSING, WRONG_TYPE = 0, 1, 2, 3


def present(column, row):
    """Whether the column has a value of its own type at `row`."""
    return not column.validity or column.validity[row] == PRESENT


def is_timestamp(column):
    return isinstance(column.values, types.ColumnValues_Timestamp)


def numeric(column):
    """The values of present rows of an int, float or timestamp column; None for other columns."""
    v = column.values
    if isinstance(v, (types.ColumnValues_Float64, types.ColumnValues_Int64, types.ColumnValues_Timestamp)):
        if not column.validity:
            return [float(x) for x in v.value]
        return [float(x) for x, s in zip(v.value, column.validity) if s == PRESENT]
    return None


def text(column, row):
    """The string at `row` of a text column (empty when not present)."""
    s = column.values.value
    return s.bytes[s.offsets[row]:s.offsets[row + 1]].decode("utf-8", "replace")


def finding(metric, value, threshold, severity, message, column=None, rows=()):
    """A finding; `severity` is "info", "warning" or "critical"."""
    sev = {"info": types.Severity.INFO, "warning": types.Severity.WARNING, "critical": types.Severity.CRITICAL}[severity]
    return types.Finding(metric=metric, column=column, value=float(value), threshold=float(threshold), severity=sev,
                         message=message, sample_rows=list(rows)[:20])


def metric(name, value, column=None):
    return types.MetricValue(metric=name, column=column, value=float(value))


def info(name, version, description, metrics, config_schema="{}"):
    return types.PluginInfo(name=name, version=version, description=description,
                            metrics=[types.MetricInfo(name=n, description=d) for n, d in metrics], config_schema=config_schema)


def encode_state(state):
    return json.dumps(state).encode()


def decode_state(data):
    return json.loads(data.decode()) if data else None
