// Formats: which text columns hold emails, UUIDs, ISO dates, URLs or IPv4
// addresses, learned over the first windows (a format is a column's when at
// least `min_share` of its rows matched it); afterwards a window where more
// rows than usual break their column's format is a finding. `formats` in the
// config pins a column's format and skips learning for it.
import { log } from 'clean-host:plugin/host@0.1.2';
import { info, finding, metric, textColumns, presentRows } from './clean-host.js';

const FORMATS = {
  email: /^[^\s@]+@[^\s@]+\.[^\s@]+$/,
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i,
  iso_date: /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/,
  url: /^https?:\/\/[^\s/$.?#].[^\s]*$/i,
  ipv4: /^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$/,
};

const DEFAULTS = { warmup_windows: 5, min_share: 0.95, min_increase: 0.02, min_rows: 50, formats: {} };

let config = { ...DEFAULTS };
let windows = 0;
// column -> { counts: {format: matches}, rows, format, baseline }
let columns = {};

function learn(name, texts) {
  const c = (columns[name] ??= { counts: {}, rows: 0, format: null, baseline: 0 });
  c.rows += texts.length;
  for (const [f, re] of Object.entries(FORMATS)) {
    c.counts[f] = (c.counts[f] ?? 0) + texts.filter((t) => re.test(t)).length;
  }
}

function settle() {
  for (const [name, c] of Object.entries(columns)) {
    const fixed = config.formats[name];
    if (fixed) {
      c.format = fixed;
      c.baseline = 0;
      continue;
    }
    let best = null;
    for (const [f, n] of Object.entries(c.counts)) {
      if (c.rows > 0 && n / c.rows >= config.min_share && (!best || n > c.counts[best])) best = f;
    }
    c.format = best;
    c.baseline = best ? 1 - c.counts[best] / c.rows : 0;
    if (best) log('info', `column '${name}' holds ${best} values (${((1 - c.baseline) * 100).toFixed(1)}% of rows while learning)`);
  }
}

export const detector = {
  describe() {
    return info('formats', '0.1.0', 'Per text column: emails, UUIDs, ISO dates, URLs, IPv4 addresses; flags rows that break the learned format',
      [['format_violation_rate', "Share of a column's present rows that do not match its format"]]);
  },

  configure(json) {
    const given = JSON.parse(json || '{}');
    for (const key of Object.keys(given)) {
      if (!(key in DEFAULTS)) throw `unknown config key '${key}' (known: ${Object.keys(DEFAULTS).join(', ')})`;
    }
    for (const [column, f] of Object.entries(given.formats ?? {})) {
      if (!(f in FORMATS)) throw `formats.${column}: unknown format '${f}' (known: ${Object.keys(FORMATS).join(', ')})`;
    }
    config = { ...DEFAULTS, ...given };
  },

  analyze(batch) {
    windows += 1;
    const findings = [];
    const metrics = [];
    for (const column of textColumns(batch)) {
      const texts = presentRows(column);
      if (texts.length < config.min_rows) continue;
      if (windows <= config.warmup_windows) {
        learn(column.name, texts.map((r) => r.text));
        continue;
      }
      const c = columns[column.name] ?? (config.formats[column.name] ? { format: config.formats[column.name], baseline: 0 } : null);
      if (!c || !c.format) continue;
      const bad = texts.filter((r) => !FORMATS[c.format].test(r.text));
      const rate = bad.length / texts.length;
      const limit = c.baseline + Math.max(config.min_increase, 4 * Math.sqrt(Math.max(c.baseline, 0.001) / texts.length));
      metrics.push(metric('format_violation_rate', rate, column.name));
      if (rate > limit) {
        findings.push(finding('format_violation_rate', rate, limit, rate > 0.2 ? 'critical' : 'warning',
          `${(rate * 100).toFixed(1)}% of '${column.name}' are not ${c.format} values (${bad.length} of ${texts.length} rows, e.g. ${JSON.stringify(bad[0].text.slice(0, 40))})`,
          column.name, bad.slice(0, 20).map((r) => r.row)));
      }
    }
    if (windows === config.warmup_windows) settle();
    return { findings, metrics };
  },

  snapshot() {
    return new TextEncoder().encode(JSON.stringify({ windows, columns }));
  },

  restore(state) {
    if (state.length === 0) return;
    ({ windows, columns } = JSON.parse(new TextDecoder().decode(state)));
  },
};
