// {{name}}: flags a window where a column is mostly absent (null or missing).
// Change `analyze` to check what matters to you. `clean-host.js` beside this
// file has the helpers; `wit/clean-host.wit` is the contract.
import { info, finding, metric, NULL, MISSING } from './clean-host.js';

let maxAbsentShare = 0.5;

export const detector = {
  describe() {
    return info('{{name}}', '0.1.0', 'Columns that are mostly null or missing',
      [['absent_share', "Share of a column's rows that are null or missing"]]);
  },

  configure(json) {
    const given = JSON.parse(json || '{}');
    for (const key of Object.keys(given)) {
      if (key !== 'max_absent_share') throw `unknown config key '${key}'`;
    }
    maxAbsentShare = given.max_absent_share ?? maxAbsentShare;
  },

  analyze(batch) {
    const findings = [];
    const metrics = [];
    for (const column of batch.columns) {
      const absent = column.validity.filter((s) => s === NULL || s === MISSING).length;
      const share = absent / Math.max(batch.rowCount, 1);
      metrics.push(metric('absent_share', share, column.name));
      if (share > maxAbsentShare) {
        findings.push(finding('absent_share', share, maxAbsentShare, 'warning',
          `${(share * 100).toFixed(0)}% of '${column.name}' is null or missing`, column.name));
      }
    }
    return { findings, metrics };
  },

  snapshot() {
    return new Uint8Array();
  },

  restore(_state) {},
};
