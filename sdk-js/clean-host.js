// Conveniences for clean-host detectors written in JavaScript
// (componentize-js): text of a column's rows decoded from its one byte
// buffer, findings and metric values in the shape the WIT contract wants.

export const PRESENT = 0, NULL = 1, MISSING = 2, WRONG_TYPE = 3;

const decoder = new TextDecoder();

/** A plugin-info record. `metrics`: [[name, description], ...]. */
export function info(name, version, description, metrics, configSchema = '{}') {
  return { name, version, description, metrics: metrics.map(([n, d]) => ({ name: n, description: d })), configSchema };
}

/** A finding; `severity` is 'info', 'warning' or 'critical'. */
export function finding(metric, value, threshold, severity, message, column, sampleRows = []) {
  return { metric, column, value, threshold, severity, message, sampleRows: Uint32Array.from(sampleRows.slice(0, 20)) };
}

export function metric(name, value, column) {
  return { metric: name, column, value };
}

/** The text columns of a batch. */
export function textColumns(batch) {
  return batch.columns.filter((c) => c.values.tag === 'text');
}

/** Whether `row` holds a value of the column's own type. */
export function present(column, row) {
  return column.validity.length === 0 || column.validity[row] === PRESENT;
}

/** The string at `row` of a text column. */
export function text(column, row) {
  const { bytes, offsets } = column.values.val;
  return decoder.decode(bytes.subarray(offsets[row], offsets[row + 1]));
}

/** [{row, text}] of the present rows of a text column. */
export function presentRows(column) {
  const rows = [];
  const n = column.values.val.offsets.length - 1;
  for (let row = 0; row < n; row++) {
    if (present(column, row)) rows.push({ row, text: text(column, row) });
  }
  return rows;
}
