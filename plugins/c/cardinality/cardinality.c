/* cardinality: how many distinct values a key column holds in a window.
 *
 * An id column (user, order, device, tail number) keeps a steady share of
 * distinct values from window to window. When a lookup or a join breaks it
 * collapses: most rows carry one default id ("0", "unknown") and every
 * per-key number downstream is wrong, while the column is neither null,
 * nor of another type, nor out of range, so no other bundled detector
 * sees it (drift does not judge columns of more than 200 values). The
 * opposite, a column of a few values that suddenly holds a new one per
 * row (free text or ids written into a category), is caught too.
 *
 * Per text and integer column, each window's distinct values are counted
 * exactly (a hash set of the present values) and their share of the
 * present rows is the metric `distinct_share`. The column's last
 * HISTORY shares that did not depart are its usual range: a share departs
 * beyond the far-out fences of their quartiles (`fence` IQRs), and only by
 * at least `min_change` from their median, once `warmup_windows` are
 * known. A departure lasting NEW_NORMAL windows is a new normal: the
 * history starts again from the next window.
 */
#include "clean_host.h"

static const ch_metric_info METRICS[] = {
    {"distinct_share", "Distinct values of a text or integer column over its present rows"},
};
static const ch_info INFO = {
    "cardinality",
    "0.1.0",
    "Key columns whose distinct values collapse (a default id in most rows) or explode (ids in a category column)",
    METRICS,
    1,
    "{\"type\":\"object\",\"properties\":{\"columns\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"min_rows\":{\"type\":\"integer\"},"
    "\"min_change\":{\"type\":\"number\"},\"warmup_windows\":{\"type\":\"integer\"},\"fence\":{\"type\":\"number\"}}}",
};

/* Shares a column's usual range is read from. */
#define HISTORY 50
/* Departing windows in a row that make a new normal. */
#define NEW_NORMAL 5
/* Columns followed at most; more are not judged (and said once). */
#define MAX_COLUMNS 256
/* Longest column name followed. */
#define MAX_NAME 256
/* Bytes of the most frequent value a message quotes. */
#define QUOTED 40
#define STATE_VERSION 1

static struct {
    char **columns; /* only these (NULL: every text and integer column) */
    size_t column_count;
    double min_rows;
    double min_change;
    double warmup_windows;
    double fence;
} config = {NULL, 0, 100, 0.2, 10, 3.0};

typedef struct {
    char name[MAX_NAME];
    size_t name_len;
    double shares[HISTORY]; /* a ring of the last shares that did not depart */
    uint32_t known;         /* shares in the ring, up to HISTORY */
    uint32_t next;          /* where the next share goes */
    uint32_t departures;    /* departing windows in a row */
} column_history;

static column_history histories[MAX_COLUMNS];
static size_t history_count;
static bool said_too_many;

/* The hash set of one column's values: a value's hash and rows; a slot is
 * empty unless stamped with the current count (no clearing). 16 bytes, so
 * a 1000-row window's table fits a core's L1 cache. */
typedef struct {
    uint64_t hash;
    uint32_t rows;
    uint32_t stamp;
} slot;
static slot *table;
static size_t table_size;
static uint32_t stamp;

static void forget(void) {
    history_count = 0;
    said_too_many = false;
}

static bool configure(const ch_config *given, ch_error *error) {
    static const char *const known[] = {"columns", "min_rows", "min_change", "warmup_windows", "fence", NULL};
    free(config.columns);
    config.columns = NULL;
    if (!ch_config_known(given, known, error) || !ch_config_number(given, "min_rows", &config.min_rows, error) ||
        !ch_config_number(given, "min_change", &config.min_change, error) || !ch_config_number(given, "warmup_windows", &config.warmup_windows, error) ||
        !ch_config_number(given, "fence", &config.fence, error) || !ch_config_strings(given, "columns", &config.columns, &config.column_count, error)) {
        return false;
    }
    if (config.min_rows != floor(config.min_rows) || config.warmup_windows != floor(config.warmup_windows)) {
        return ch_fail(error, "min_rows and warmup_windows must be whole numbers");
    }
    if (config.min_rows < 2 || config.warmup_windows < 3 || config.warmup_windows > HISTORY) {
        return ch_fail(error, "need min_rows >= 2 and 3 <= warmup_windows <= %d", HISTORY);
    }
    if (!(config.min_change > 0 && config.min_change < 1) || !(config.fence > 0)) return ch_fail(error, "need 0 < min_change < 1 and fence > 0");
    return true;
}

static bool watched(ch_text name) {
    if (!config.columns) return true;
    for (size_t i = 0; i < config.column_count; i++) {
        if (ch_text_is(name, config.columns[i])) return true;
    }
    return false;
}

static column_history *history_of(ch_text name) {
    for (size_t i = 0; i < history_count; i++) {
        if (histories[i].name_len == name.len && memcmp(histories[i].name, name.ptr, name.len) == 0) return &histories[i];
    }
    if (history_count == MAX_COLUMNS || name.len > MAX_NAME) {
        if (!said_too_many) ch_log(CH_LOG_WARN, "cardinality: more than %d columns, or a name over %d bytes: the others are not judged", MAX_COLUMNS, MAX_NAME);
        said_too_many = true;
        return NULL;
    }
    column_history *h = &histories[history_count++];
    memset(h, 0, sizeof *h);
    memcpy(h->name, name.ptr, name.len);
    h->name_len = name.len;
    return h;
}

/* splitmix64's finaliser: spreads close integers over the whole table. */
static uint64_t mix(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Eight bytes a step (values differ from window to window, never stored,
 * so the machine's byte order does not matter). */
static uint64_t hash_text(ch_text t) {
    uint64_t h = t.len * 0x9e3779b97f4a7c15ULL, word;
    size_t i = 0;
    for (; i + 8 <= t.len; i += 8) {
        memcpy(&word, t.ptr + i, 8);
        h = (h ^ word) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    for (word = 0; i < t.len; i++) word = word << 8 | (uint8_t)t.ptr[i];
    return mix(h ^ word);
}

static uint64_t hash_row(const ch_column *column, uint32_t row) {
    if (ch_kind(column) == CH_TEXT) return hash_text(ch_text_at(column, row));
    return mix((uint64_t)column->values.val.int64.ptr[row]);
}

/* Count the column's distinct present values into `table`; returns them and
 * sets *present and *top (the slot of the most frequent value). */
static uint32_t count_distinct(const ch_column *column, uint32_t rows, uint32_t *present, slot *top) {
    size_t want = 16;
    while (want < 2 * (size_t)rows) want *= 2;
    if (want > table_size || ++stamp == 0) {
        table = (slot *)ch_grow(table, want * sizeof(slot));
        memset(table, 0, want * sizeof(slot));
        table_size = want;
        stamp = 1;
    }
    uint32_t distinct = 0, counted = 0;
    *top = (slot){0, 0, 0};
    for (uint32_t r = 0; r < rows; r++) {
        if (!ch_present(column, r)) continue;
        counted++;
        uint64_t h = hash_row(column, r);
        size_t at = h & (want - 1);
        while (table[at].stamp == stamp && table[at].hash != h) at = (at + 1) & (want - 1);
        if (table[at].stamp != stamp) {
            table[at] = (slot){h, 0, stamp};
            distinct++;
        }
        if (++table[at].rows > top->rows) *top = table[at];
    }
    *present = counted;
    return distinct;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of n sorted values, interpolated. */
static double quantile(const double *sorted, uint32_t n, double q) {
    double at = q * (n - 1);
    uint32_t below = (uint32_t)at;
    return below + 1 < n ? sorted[below] + (at - below) * (sorted[below + 1] - sorted[below]) : sorted[n - 1];
}

/* The first rows holding the value hashed `hash` (the sample of a collapse). */
static size_t rows_of(const ch_column *column, uint32_t rows, uint64_t hash, uint32_t *sample) {
    size_t n = 0;
    for (uint32_t r = 0; r < rows && n < CH_MAX_SAMPLE_ROWS; r++) {
        if (ch_present(column, r) && hash_row(column, r) == hash) sample[n++] = r;
    }
    return n;
}

static void judge(const ch_column *column, uint32_t rows, ch_analysis *out) {
    int kind = ch_kind(column);
    if ((kind != CH_TEXT && kind != CH_INT64) || !watched(ch_column_name(column))) return;
    uint32_t present;
    slot top;
    uint32_t distinct = count_distinct(column, rows, &present, &top);
    if (present < config.min_rows) return;
    column_history *h = history_of(ch_column_name(column));
    if (!h) return;
    double share = (double)distinct / present;
    ch_metric(out, "distinct_share", column, share);
    bool departed = false;
    if (h->known >= config.warmup_windows) {
        double sorted[HISTORY];
        memcpy(sorted, h->shares, h->known * sizeof(double));
        qsort(sorted, h->known, sizeof(double), by_value);
        double q1 = quantile(sorted, h->known, 0.25), median = quantile(sorted, h->known, 0.5), q3 = quantile(sorted, h->known, 0.75);
        double low = fmin(q1 - config.fence * (q3 - q1), median - config.min_change);
        double high = fmax(q3 + config.fence * (q3 - q1), median + config.min_change);
        ch_text name = ch_column_name(column);
        int severity = fabs(share - median) >= 2 * config.min_change ? CH_CRITICAL : CH_WARNING;
        if (share < low) {
            departed = true;
            uint32_t sample[CH_MAX_SAMPLE_ROWS];
            size_t n = rows_of(column, rows, top.hash, sample);
            char quoted[QUOTED + 24];
            if (kind == CH_TEXT) {
                ch_text v = ch_text_at(column, sample[0]), shown = ch_text_prefix(v, QUOTED);
                snprintf(quoted, sizeof quoted, "\"%.*s\"%s", CH_TEXT_ARGS(shown), shown.len < v.len ? "..." : "");
            } else {
                snprintf(quoted, sizeof quoted, "%lld", (long long)column->values.val.int64.ptr[sample[0]]);
            }
            ch_finding(out, "distinct_share", column, share, low, severity, sample, n,
                       "%.*s holds %u distinct values in %u rows (%.1f%%), usually %.1f%% (below %.1f%% departs); %s is in %u rows", CH_TEXT_ARGS(name),
                       distinct, present, share * 100, median * 100, low * 100, quoted, top.rows);
        } else if (share > high) {
            departed = true;
            ch_finding(out, "distinct_share", column, share, high, severity, NULL, 0,
                       "%.*s holds %u distinct values in %u rows (%.1f%%), usually %.1f%% (above %.1f%% departs): ids or free text in a column of few values?",
                       CH_TEXT_ARGS(name), distinct, present, share * 100, median * 100, high * 100);
        }
    }
    if (departed) {
        if (++h->departures >= NEW_NORMAL) {
            h->known = h->next = h->departures = 0;
            ch_log(CH_LOG_INFO, "cardinality: %.*s departed %d windows in a row: learning it anew", (int)h->name_len, h->name, NEW_NORMAL);
        }
        return;
    }
    h->departures = 0;
    h->shares[h->next] = share;
    h->next = (h->next + 1) % HISTORY;
    if (h->known < HISTORY) h->known++;
}

static bool analyze(const ch_batch *batch, ch_analysis *out, ch_error *error) {
    (void)error;
    for (size_t i = 0; i < batch->columns.len; i++) judge(&batch->columns.ptr[i], batch->row_count, out);
    return true;
}

static void snapshot(ch_buffer *state) {
    ch_put_u64(state, STATE_VERSION);
    ch_put_u64(state, history_count);
    for (size_t i = 0; i < history_count; i++) {
        const column_history *h = &histories[i];
        ch_put_u64(state, h->name_len);
        ch_put_bytes(state, h->name, h->name_len);
        ch_put_u64(state, h->known);
        ch_put_u64(state, h->next);
        ch_put_u64(state, h->departures);
        for (uint32_t k = 0; k < h->known; k++) ch_put_f64(state, h->shares[k]);
    }
}

static bool restore(ch_reader *state, ch_error *error) {
    forget();
    uint64_t version = ch_get_u64(state);
    if (state->cut) return ch_fail(error, "the state is cut short");
    if (version != STATE_VERSION) {
        ch_log(CH_LOG_WARN, "cardinality: state of version %llu is not one this version reads; learning anew", (unsigned long long)version);
        ch_drop(state);
        return true;
    }
    uint64_t count = ch_get_u64(state);
    if (count > MAX_COLUMNS) return ch_fail(error, "state holds %llu columns, more than %d", (unsigned long long)count, MAX_COLUMNS);
    for (uint64_t i = 0; i < count && !state->cut; i++) {
        column_history *h = &histories[history_count++];
        memset(h, 0, sizeof *h);
        uint64_t len = ch_get_u64(state);
        const uint8_t *name = len <= MAX_NAME ? ch_get_bytes(state, len) : NULL;
        uint64_t known = ch_get_u64(state), next = ch_get_u64(state), departures = ch_get_u64(state);
        if (!name || known > HISTORY || next >= HISTORY || departures >= NEW_NORMAL) {
            forget();
            return ch_fail(error, "state of column %llu is not one this version wrote", (unsigned long long)i);
        }
        memcpy(h->name, name, len);
        h->name_len = len;
        h->known = (uint32_t)known;
        h->next = (uint32_t)next;
        h->departures = (uint32_t)departures;
        for (uint32_t k = 0; k < h->known; k++) {
            h->shares[k] = ch_get_f64(state);
            /* NaN would make every fence NaN: never departing again. */
            if (!(h->shares[k] >= 0 && h->shares[k] <= 1)) {
                forget();
                return ch_fail(error, "state of column %llu holds a share out of [0, 1]", (unsigned long long)i);
            }
        }
    }
    return true;
}

CLEAN_HOST_DETECTOR(INFO, configure, analyze, snapshot, restore)
