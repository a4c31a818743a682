/* clean_host.h: helpers for clean-host detectors written in C.
 *
 * A detector is one C file that includes this header, defines its five
 * functions and names them once with CLEAN_HOST_DETECTOR(...):
 *
 *   static const ch_metric_info METRICS[] = {{"absent_share", "..."}};
 *   static const ch_info INFO = {"my-check", "0.1.0", "What it checks",
 *                                METRICS, 1, "{}"};
 *   static bool configure(const ch_config *config, ch_error *error);
 *   static bool analyze(const ch_batch *batch, ch_analysis *out, ch_error *error);
 *   static void snapshot(ch_buffer *state);
 *   static bool restore(ch_reader *state, ch_error *error);
 *   CLEAN_HOST_DETECTOR(INFO, configure, analyze, snapshot, restore)
 *
 * The macro writes the WIT exports (bindings from `detector_plugin.h`, which
 * `clean-host plugin build` generates from the project's wit/ folder): it
 * parses the config, frees what the host handed over, turns a `ch_error`
 * into the call's error, and checks that a restore read its state whole.
 * Built natively (not for wasm) it writes nothing, so tests can include the
 * detector's C file and call its functions on batches they make; `ch_log`
 * then prints to stderr.
 *
 * Rows: `ch_row_state` gives CH_PRESENT, CH_NULL, CH_MISSING (field absent)
 * or CH_WRONG_TYPE (a value of another type than the column's). Everything
 * the helpers allocate goes back to the host's post-return free; running
 * out of memory aborts, which the host contains like any trap.
 */
#ifndef CLEAN_HOST_H
#define CLEAN_HOST_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detector_plugin.h"

typedef clean_host_plugin_types_batch_t ch_batch;
typedef clean_host_plugin_types_column_t ch_column;
typedef clean_host_plugin_types_analysis_t ch_analysis;

/* A row's state in a column. */
enum { CH_PRESENT = 0, CH_NULL = 1, CH_MISSING = 2, CH_WRONG_TYPE = 3 };
/* A finding's severity: info never pages anyone. */
enum { CH_INFO = CLEAN_HOST_PLUGIN_TYPES_SEVERITY_INFO, CH_WARNING = CLEAN_HOST_PLUGIN_TYPES_SEVERITY_WARNING, CH_CRITICAL = CLEAN_HOST_PLUGIN_TYPES_SEVERITY_CRITICAL };
/* What a column holds (`ch_kind`). */
enum {
    CH_FLOAT64 = CLEAN_HOST_PLUGIN_TYPES_COLUMN_VALUES_FLOAT64,
    CH_INT64 = CLEAN_HOST_PLUGIN_TYPES_COLUMN_VALUES_INT64,
    CH_BOOLEAN = CLEAN_HOST_PLUGIN_TYPES_COLUMN_VALUES_BOOLEAN,
    CH_TIMESTAMP = CLEAN_HOST_PLUGIN_TYPES_COLUMN_VALUES_TIMESTAMP,
    CH_TEXT = CLEAN_HOST_PLUGIN_TYPES_COLUMN_VALUES_TEXT,
};
/* Log levels of `ch_log`. */
enum { CH_LOG_DEBUG = 0, CH_LOG_INFO = 1, CH_LOG_WARN = 2, CH_LOG_ERROR = 3 };
/* Most rows a finding carries: the host rejects more. */
#define CH_MAX_SAMPLE_ROWS 20
/* Most members a config object may have. */
#define CH_CONFIG_MEMBERS 64
/* Deepest nesting of arrays and objects in a config. */
#define CH_CONFIG_DEPTH 32

/* Bytes that are not NUL-terminated (a column name, a text value); print
 * with "%.*s" and CH_TEXT_ARGS(t). */
typedef struct {
    const char *ptr;
    size_t len;
} ch_text;
#define CH_TEXT_ARGS(t) (int)(t).len, (t).ptr

/* At most `most` bytes of `t`, never ending inside a UTF-8 character: the
 * host refuses strings that are not valid UTF-8. */
static inline ch_text ch_text_prefix(ch_text t, size_t most) {
    if (t.len <= most) return t;
    while (most > 0 && ((unsigned char)t.ptr[most] & 0xC0) == 0x80) most--;
    return (ch_text){t.ptr, most};
}

/* Drop a UTF-8 character cut off at the end of `s` (NUL-terminated), as a
 * bounded snprintf leaves it. */
static inline void ch_utf8_trim(char *s) {
    size_t end = strlen(s), start = end;
    while (start > 0 && ((unsigned char)s[start - 1] & 0xC0) == 0x80) start--;
    if (start == 0) return;
    unsigned char lead = (unsigned char)s[start - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (end - (start - 1) < need) s[start - 1] = 0;
}

typedef struct {
    const char *name;
    const char *description;
} ch_metric_info;

/* What the detector says about itself (`describe`). */
typedef struct {
    const char *name;
    const char *version;
    const char *description;
    const ch_metric_info *metrics;
    size_t metric_count;
    /* Its config keys as a JSON Schema document ("{}" for none). */
    const char *config_schema;
} ch_info;

/* Why a call failed: set with `ch_fail`. */
typedef struct {
    char message[512];
} ch_error;

/* The config's top-level members, as spans of the JSON text. */
typedef struct {
    size_t count;
    ch_text keys[CH_CONFIG_MEMBERS];
    ch_text values[CH_CONFIG_MEMBERS];
} ch_config;

/* State being written by `snapshot`. */
typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} ch_buffer;

/* State being read by `restore`: reads past its end give 0 and mark it cut. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
    size_t at;
    bool cut;
} ch_reader;

/* Set `error` and return false: `return ch_fail(error, "bad %s", key);`. */
static inline bool ch_fail(ch_error *error, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(error->message, sizeof error->message, format, args);
    va_end(args);
    ch_utf8_trim(error->message);
    return false;
}

/* `ptr` resized to `bytes` (NULL for none: an empty list the host's free skips). */
static inline void *ch_grow(void *ptr, size_t bytes) {
    if (!bytes) {
        free(ptr);
        return NULL;
    }
    void *grown = realloc(ptr, bytes);
    if (!grown) abort();
    return grown;
}

/* A formatted, heap-allocated string for the host (freed after the call). */
static inline detector_plugin_string_t ch_string_vf(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(NULL, 0, format, args);
    detector_plugin_string_t s = {NULL, 0};
    if (len > 0) {
        s.ptr = (uint8_t *)ch_grow(NULL, (size_t)len + 1);
        vsnprintf((char *)s.ptr, (size_t)len + 1, format, again);
        s.len = (size_t)len;
    }
    va_end(again);
    return s;
}

static inline detector_plugin_string_t ch_string_n(const char *text, size_t len) {
    detector_plugin_string_t s = {NULL, len};
    if (len) {
        s.ptr = (uint8_t *)ch_grow(NULL, len);
        memcpy(s.ptr, text, len);
    }
    return s;
}

static inline detector_plugin_string_t ch_string(const char *text) { return ch_string_n(text, strlen(text)); }

/* ---- log ---- */

#if defined(__wasm__)
static inline void ch_log(int level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    detector_plugin_string_t message = ch_string_vf(format, args);
    va_end(args);
    clean_host_plugin_host_log((clean_host_plugin_host_log_level_t)level, &message);
    free(message.ptr);
}
#else
static inline void ch_log(int level, const char *format, ...) {
    static const char *const names[] = {"debug", "info", "warn", "error"};
    va_list args;
    va_start(args, format);
    fprintf(stderr, "[%s] ", names[level & 3]);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
}
#endif

/* ---- columns ---- */

static inline ch_text ch_column_name(const ch_column *column) { return (ch_text){(const char *)column->name.ptr, column->name.len}; }

static inline bool ch_text_is(ch_text text, const char *s) { return text.len == strlen(s) && memcmp(text.ptr, s, text.len) == 0; }

/* The column called `name`, or NULL when the window has none. */
static inline const ch_column *ch_column_named(const ch_batch *batch, const char *name) {
    for (size_t i = 0; i < batch->columns.len; i++) {
        if (ch_text_is(ch_column_name(&batch->columns.ptr[i]), name)) return &batch->columns.ptr[i];
    }
    return NULL;
}

/* CH_FLOAT64, CH_INT64, CH_BOOLEAN, CH_TIMESTAMP or CH_TEXT. */
static inline int ch_kind(const ch_column *column) { return column->values.tag; }

static inline int ch_row_state(const ch_column *column, uint32_t row) { return column->validity.len ? column->validity.ptr[row] : CH_PRESENT; }

static inline bool ch_present(const ch_column *column, uint32_t row) { return ch_row_state(column, row) == CH_PRESENT; }

/* Rows of the column in each state: counts[CH_PRESENT] .. counts[CH_WRONG_TYPE]. */
static inline void ch_count_states(const ch_column *column, uint32_t rows, uint32_t counts[4]) {
    counts[0] = counts[1] = counts[2] = counts[3] = 0;
    if (!column->validity.len) {
        counts[CH_PRESENT] = rows;
        return;
    }
    for (uint32_t r = 0; r < rows && r < column->validity.len; r++) counts[column->validity.ptr[r] & 3]++;
}

/* A present number (float, integer or timestamp in ms) at `row`. */
static inline bool ch_number(const ch_column *column, uint32_t row, double *value) {
    if (!ch_present(column, row)) return false;
    switch (column->values.tag) {
    case CH_FLOAT64: *value = column->values.val.float64.ptr[row]; return true;
    case CH_INT64: *value = (double)column->values.val.int64.ptr[row]; return true;
    case CH_TIMESTAMP: *value = (double)column->values.val.timestamp.ptr[row]; return true;
    default: return false;
    }
}

/* The UTF-8 text at `row` of a text column (empty for other columns and absent rows). */
static inline ch_text ch_text_at(const ch_column *column, uint32_t row) {
    if (column->values.tag != CH_TEXT) return (ch_text){"", 0};
    const clean_host_plugin_types_string_column_t *s = &column->values.val.text;
    uint32_t from = s->offsets.ptr[row], to = s->offsets.ptr[row + 1];
    return (ch_text){(const char *)s->bytes.ptr + from, to - from};
}

/* ---- analysis ---- */

/* Room for one more entry in a list that grows in powers of two. */
static inline void *ch_reserve_one(void *ptr, size_t len, size_t size) {
    if (len == 0) return ch_grow(ptr, 4 * size);
    if (len >= 4 && (len & (len - 1)) == 0) return ch_grow(ptr, 2 * len * size);
    return ptr;
}

static inline detector_plugin_option_string_t ch_column_option(const ch_column *column) {
    detector_plugin_option_string_t option = {false, {NULL, 0}};
    if (column) {
        option.is_some = true;
        option.val = ch_string_n((const char *)column->name.ptr, column->name.len);
    }
    return option;
}

/* A value measured in this window (column NULL: of the whole window); the
 * host watches each metric across windows with control rules. */
static inline void ch_metric(ch_analysis *out, const char *metric, const ch_column *column, double value) {
    out->metrics.ptr = (clean_host_plugin_types_metric_value_t *)ch_reserve_one(out->metrics.ptr, out->metrics.len, sizeof *out->metrics.ptr);
    clean_host_plugin_types_metric_value_t *m = &out->metrics.ptr[out->metrics.len++];
    m->metric = ch_string(metric);
    m->column = ch_column_option(column);
    m->value = value;
}

/* A departure found in this window, with up to CH_MAX_SAMPLE_ROWS of the
 * rows that show it (`rows` may be NULL) and a printf-style message. */
static inline void ch_finding(ch_analysis *out, const char *metric, const ch_column *column, double value, double threshold, int severity, const uint32_t *rows,
                              size_t row_count, const char *format, ...) {
    out->findings.ptr = (clean_host_plugin_types_finding_t *)ch_reserve_one(out->findings.ptr, out->findings.len, sizeof *out->findings.ptr);
    clean_host_plugin_types_finding_t *f = &out->findings.ptr[out->findings.len++];
    f->metric = ch_string(metric);
    f->column = ch_column_option(column);
    f->value = value;
    f->threshold = threshold;
    f->severity = (clean_host_plugin_types_severity_t)severity;
    va_list args;
    va_start(args, format);
    f->message = ch_string_vf(format, args);
    va_end(args);
    size_t kept = row_count < CH_MAX_SAMPLE_ROWS ? row_count : CH_MAX_SAMPLE_ROWS;
    f->sample_rows.ptr = kept ? (uint32_t *)ch_grow(NULL, kept * sizeof(uint32_t)) : NULL;
    f->sample_rows.len = kept;
    if (kept) memcpy(f->sample_rows.ptr, rows, kept * sizeof(uint32_t));
}

/* Free what an analysis holds (the host does it after a call; for tests). */
static inline void ch_analysis_free(ch_analysis *out) {
    for (size_t i = 0; i < out->findings.len; i++) {
        clean_host_plugin_types_finding_t *f = &out->findings.ptr[i];
        free(f->metric.ptr);
        free(f->column.val.ptr);
        free(f->message.ptr);
        free(f->sample_rows.ptr);
    }
    for (size_t i = 0; i < out->metrics.len; i++) {
        free(out->metrics.ptr[i].metric.ptr);
        free(out->metrics.ptr[i].column.val.ptr);
    }
    free(out->findings.ptr);
    free(out->metrics.ptr);
    memset(out, 0, sizeof *out);
}

/* ---- config (a JSON object) ----
 * The host sends what serde_json writes; the reader below checks structure
 * (strings, nesting, numbers a C library reads) and is lenient with the
 * rest (an unknown escape, a leading zero). */

/* A JSON number (as strtod reads it) into *value; false if it is none. */
static inline bool ch_parse_number(ch_text t, double *value) {
    char number[64], *stop;
    if (t.len == 0 || t.len >= sizeof number || !(t.ptr[0] == '-' || (t.ptr[0] >= '0' && t.ptr[0] <= '9'))) return false;
    memcpy(number, t.ptr, t.len);
    number[t.len] = 0;
    *value = strtod(number, &stop);
    return *stop == 0 && isfinite(*value);
}

typedef struct {
    const char *at;
    const char *end;
} ch_json;

static inline void ch_json_space(ch_json *j) {
    while (j->at < j->end && (*j->at == ' ' || *j->at == '\t' || *j->at == '\n' || *j->at == '\r')) j->at++;
}

static inline bool ch_json_string(ch_json *j) {
    if (j->at >= j->end || *j->at != '"') return false;
    for (j->at++; j->at < j->end; j->at++) {
        if (*j->at == '\\') {
            if (++j->at == j->end) return false;
        } else if (*j->at == '"') {
            j->at++;
            return true;
        } else if ((unsigned char)*j->at < 0x20) {
            return false;
        }
    }
    return false;
}

/* Skip one JSON value; false if it is not one. */
static inline bool ch_json_skip_value(ch_json *j, int depth) {
    ch_json_space(j);
    if (j->at >= j->end || depth > CH_CONFIG_DEPTH) return false;
    char c = *j->at;
    if (c == '"') return ch_json_string(j);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->at++;
        ch_json_space(j);
        if (j->at < j->end && *j->at == close) {
            j->at++;
            return true;
        }
        for (;;) {
            if (c == '{') {
                ch_json_space(j);
                if (!ch_json_string(j)) return false;
                ch_json_space(j);
                if (j->at >= j->end || *j->at++ != ':') return false;
            }
            if (!ch_json_skip_value(j, depth + 1)) return false;
            ch_json_space(j);
            if (j->at >= j->end) return false;
            if (*j->at == ',') {
                j->at++;
                continue;
            }
            return *j->at++ == close;
        }
    }
    const char *start = j->at;
    while (j->at < j->end && ((*j->at && strchr("+-.eE", *j->at)) || (*j->at >= '0' && *j->at <= '9') || (*j->at >= 'a' && *j->at <= 'z'))) j->at++;
    size_t len = (size_t)(j->at - start);
    if ((len == 4 && !memcmp(start, "true", 4)) || (len == 5 && !memcmp(start, "false", 5)) || (len == 4 && !memcmp(start, "null", 4))) return true;
    double ignored;
    return ch_parse_number((ch_text){start, len}, &ignored);
}

/* Read the config's members; an empty text is an empty object. */
static inline bool ch_config_parse(const char *text, size_t len, ch_config *config, ch_error *error) {
    ch_json j = {text, text + len};
    config->count = 0;
    ch_json_space(&j);
    if (j.at == j.end) return true;
    if (*j.at != '{') return ch_fail(error, "config is not a JSON object");
    j.at++;
    ch_json_space(&j);
    if (j.at < j.end && *j.at == '}') {
        j.at++;
    } else {
        for (;;) {
            ch_json_space(&j);
            const char *key = j.at;
            if (!ch_json_string(&j)) return ch_fail(error, "config: expected a key at byte %d", (int)(key - text));
            ch_text name = {key + 1, (size_t)(j.at - key) - 2};
            ch_json_space(&j);
            if (j.at >= j.end || *j.at != ':') return ch_fail(error, "config: expected ':' at byte %d", (int)(j.at - text));
            j.at++;
            ch_json_space(&j);
            const char *value = j.at;
            if (!ch_json_skip_value(&j, 1)) return ch_fail(error, "config: bad value at byte %d", (int)(value - text));
            if (config->count == CH_CONFIG_MEMBERS) return ch_fail(error, "config: more than %d keys", CH_CONFIG_MEMBERS);
            config->keys[config->count] = name;
            config->values[config->count++] = (ch_text){value, (size_t)(j.at - value)};
            ch_json_space(&j);
            if (j.at < j.end && *j.at == ',') {
                j.at++;
                continue;
            }
            if (j.at < j.end && *j.at == '}') {
                j.at++;
                break;
            }
            return ch_fail(error, "config: expected ',' or '}' at byte %d", (int)(j.at - text));
        }
    }
    ch_json_space(&j);
    if (j.at != j.end) return ch_fail(error, "config: text after the object at byte %d", (int)(j.at - text));
    return true;
}

/* The raw JSON of member `key`, or NULL. Keys are compared as written (no escapes). */
static inline const ch_text *ch_config_raw(const ch_config *config, const char *key) {
    for (size_t i = 0; i < config->count; i++) {
        if (ch_text_is(config->keys[i], key)) return &config->values[i];
    }
    return NULL;
}

/* Fails on any member not in `known` (a NULL-terminated list), naming them all. */
static inline bool ch_config_known(const ch_config *config, const char *const *known, ch_error *error) {
    size_t used = 0;
    error->message[0] = 0;
    for (size_t i = 0; i < config->count; i++) {
        bool found = false;
        for (const char *const *k = known; *k && !found; k++) found = ch_text_is(config->keys[i], *k);
        if (!found) {
            used += (size_t)snprintf(error->message + used, used < sizeof error->message ? sizeof error->message - used : 0, "%s%.*s",
                                     used ? ", " : "unknown config key(s): ", CH_TEXT_ARGS(config->keys[i]));
            if (used >= sizeof error->message) used = sizeof error->message - 1;
        }
    }
    ch_utf8_trim(error->message);
    return used == 0;
}

/* Member `key` as a finite number into `value` (left as it is when absent). */
static inline bool ch_config_number(const ch_config *config, const char *key, double *value, ch_error *error) {
    const ch_text *raw = ch_config_raw(config, key);
    if (!raw) return true;
    double parsed;
    if (!ch_parse_number(*raw, &parsed)) return ch_fail(error, "%s must be a number, not %.*s", key, CH_TEXT_ARGS(ch_text_prefix(*raw, 40)));
    *value = parsed;
    return true;
}

/* Member `key` as true or false into `value` (left as it is when absent). */
static inline bool ch_config_bool(const ch_config *config, const char *key, bool *value, ch_error *error) {
    const ch_text *raw = ch_config_raw(config, key);
    if (!raw) return true;
    if (ch_text_is(*raw, "true") || ch_text_is(*raw, "false")) {
        *value = raw->ptr[0] == 't';
        return true;
    }
    return ch_fail(error, "%s must be true or false", key);
}

/* A JSON string's text, unescaped into `out` (NUL-terminated, at most cap - 1 bytes). */
static inline bool ch_json_unescape(ch_text quoted, char *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 1; i + 1 < quoted.len; i++) {
        char c = quoted.ptr[i];
        if (c == '\\') {
            c = quoted.ptr[++i];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *at = strchr(from, c);
            if (!at || !c) return false; /* \uXXXX: not taken in names and keys */
            c = to[at - from];
        }
        if (n + 1 >= cap) return false;
        out[n++] = c;
    }
    out[n] = 0;
    return true;
}

/* Member `key` as a string into `out` (cap bytes with its NUL; left as it is when absent). */
static inline bool ch_config_string(const ch_config *config, const char *key, char *out, size_t cap, ch_error *error) {
    const ch_text *raw = ch_config_raw(config, key);
    if (!raw) return true;
    if (raw->ptr[0] != '"' || !ch_json_unescape(*raw, out, cap)) return ch_fail(error, "%s must be a string of at most %d bytes without \\u escapes", key, (int)cap - 1);
    return true;
}

/* Member `key`, an array of strings, as NUL-terminated strings in one
 * malloc'd block (*items, *count; both 0 when absent): free(*items). */
static inline bool ch_config_strings(const ch_config *config, const char *key, char ***items, size_t *count, ch_error *error) {
    *items = NULL;
    *count = 0;
    const ch_text *raw = ch_config_raw(config, key);
    if (!raw) return true;
    if (raw->ptr[0] != '[') return ch_fail(error, "%s must be an array of strings", key);
    /* Pointers, then the texts: never longer than the JSON itself. */
    size_t slots = raw->len / 2 + 1;
    char **list = (char **)ch_grow(NULL, slots * sizeof(char *) + raw->len);
    char *text = (char *)(list + slots);
    ch_json j = {raw->ptr + 1, raw->ptr + raw->len - 1};
    for (;;) {
        ch_json_space(&j);
        if (j.at == j.end) break;
        const char *start = j.at;
        if (!ch_json_string(&j) || !ch_json_unescape((ch_text){start, (size_t)(j.at - start)}, text, raw->len)) {
            free(list);
            return ch_fail(error, "%s must be an array of strings without \\u escapes", key);
        }
        list[(*count)++] = text;
        text += strlen(text) + 1;
        ch_json_space(&j);
        if (j.at < j.end && *j.at == ',') j.at++;
    }
    *items = list;
    return true;
}

/* ---- state ---- */

static inline void ch_put_bytes(ch_buffer *b, const void *bytes, size_t len) {
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->ptr = (uint8_t *)ch_grow(b->ptr, b->cap);
    }
    memcpy(b->ptr + b->len, bytes, len);
    b->len += len;
}

/* Little-endian, whatever the machine that writes or reads. */
static inline void ch_put_u64(ch_buffer *b, uint64_t v) {
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)(v >> (8 * i));
    ch_put_bytes(b, bytes, 8);
}

static inline void ch_put_f64(ch_buffer *b, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    ch_put_u64(b, bits);
}

static inline const uint8_t *ch_get_bytes(ch_reader *r, size_t len) {
    if (r->cut || r->len - r->at < len) {
        r->cut = true;
        return NULL;
    }
    r->at += len;
    return r->ptr + r->at - len;
}

static inline uint64_t ch_get_u64(ch_reader *r) {
    const uint8_t *bytes = ch_get_bytes(r, 8);
    uint64_t v = 0;
    for (int i = 0; bytes && i < 8; i++) v |= (uint64_t)bytes[i] << (8 * i);
    return v;
}

static inline double ch_get_f64(ch_reader *r) {
    uint64_t bits = ch_get_u64(r);
    double v;
    memcpy(&v, &bits, 8);
    return v;
}

/* Take the rest of the state as read: for a restore that keeps none of it
 * (a state another version wrote, or one this version no longer needs),
 * which would otherwise be refused as not read whole. */
static inline void ch_drop(ch_reader *r) { r->at = r->len; }

/* The message of a failed call: the error's, or `fallback` if none was set. */
static inline detector_plugin_string_t ch_error_string(const ch_error *error, const char *fallback) {
    return ch_string(error->message[0] ? error->message : fallback);
}

/* ---- the exports ---- */

#if defined(__wasm__)
#define CLEAN_HOST_DETECTOR(info, configure_fn, analyze_fn, snapshot_fn, restore_fn)                                                                  \
    void exports_clean_host_plugin_detector_describe(exports_clean_host_plugin_detector_plugin_info_t *ret) {                                           \
        ret->name = ch_string((info).name);                                                                                                            \
        ret->version = ch_string((info).version);                                                                                                      \
        ret->description = ch_string((info).description);                                                                                              \
        ret->config_schema = ch_string((info).config_schema ? (info).config_schema : "{}");                                                           \
        ret->metrics.len = (info).metric_count;                                                                                                        \
        ret->metrics.ptr = (clean_host_plugin_types_metric_info_t *)ch_grow(NULL, (info).metric_count * sizeof *ret->metrics.ptr);                   \
        for (size_t i = 0; i < (info).metric_count; i++) {                                                                                             \
            ret->metrics.ptr[i].name = ch_string((info).metrics[i].name);                                                                              \
            ret->metrics.ptr[i].description = ch_string((info).metrics[i].description);                                                                \
        }                                                                                                                                              \
    }                                                                                                                                                  \
    bool exports_clean_host_plugin_detector_configure(detector_plugin_string_t *config, detector_plugin_string_t *err) {                             \
        static ch_config parsed;                                                                                                                       \
        ch_error error = {{0}};                                                                                                                        \
        bool ok = ch_config_parse((const char *)config->ptr, config->len, &parsed, &error) && configure_fn(&parsed, &error);                          \
        detector_plugin_string_free(config);                                                                                                           \
        if (!ok) *err = ch_error_string(&error, "configure failed");                                                            \
        return ok;                                                                                                                                     \
    }                                                                                                                                                  \
    bool exports_clean_host_plugin_detector_analyze(exports_clean_host_plugin_detector_batch_t *batch, exports_clean_host_plugin_detector_analysis_t *ret, \
                                                    detector_plugin_string_t *err) {                                                                  \
        ch_error error = {{0}};                                                                                                                        \
        memset(ret, 0, sizeof *ret);                                                                                                                   \
        bool ok = analyze_fn(batch, ret, &error);                                                                                                      \
        exports_clean_host_plugin_detector_batch_free(batch);                                                                                          \
        if (!ok) {                                                                                                                                     \
            ch_analysis_free(ret);                                                                                                                     \
            *err = ch_error_string(&error, "analyze failed");                                                                    \
        }                                                                                                                                              \
        return ok;                                                                                                                                     \
    }                                                                                                                                                  \
    void exports_clean_host_plugin_detector_snapshot(detector_plugin_list_u8_t *ret) {                                                                \
        ch_buffer state = {NULL, 0, 0};                                                                                                                \
        snapshot_fn(&state);                                                                                                                           \
        ret->ptr = state.ptr;                                                                                                                          \
        ret->len = state.len;                                                                                                                          \
    }                                                                                                                                                  \
    bool exports_clean_host_plugin_detector_restore(detector_plugin_list_u8_t *state, detector_plugin_string_t *err) {                               \
        ch_error error = {{0}};                                                                                                                        \
        ch_reader reader = {state->ptr, state->len, 0, false};                                                                                         \
        bool ok = state->len == 0 || restore_fn(&reader, &error);                                                                                      \
        if (ok && state->len && (reader.cut || reader.at != reader.len)) ok = ch_fail(&error, "the state is not one this version wrote");            \
        detector_plugin_list_u8_free(state);                                                                                                           \
        if (!ok) *err = ch_error_string(&error, "restore failed");                                                              \
        return ok;                                                                                                                                     \
    }
#else
/* Natively the detector's functions are called by its tests directly. */
#define CLEAN_HOST_DETECTOR(info, configure_fn, analyze_fn, snapshot_fn, restore_fn)
#endif

#endif
