/* The cardinality detector's unit tests: its C built natively (with the
 * bindings `clean-host plugin build` wrote into build/bindings) and called
 * on windows made here. Prints "N passed in Ts", or each failed check.
 *   cc -I build/bindings -I . tests/test_cardinality.c -lm && ./a.out
 */
#include "../cardinality.c"

#include <time.h>

static int failed, passed;

#define CHECK(cond, ...)                                                                                                                               \
    do {                                                                                                                                               \
        if (!(cond)) {                                                                                                                                 \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                                                                                 \
            fprintf(stderr, __VA_ARGS__);                                                                                                              \
            fputc('\n', stderr);                                                                                                                       \
            ok = false;                                                                                                                                \
        }                                                                                                                                              \
    } while (0)

/* A fixed-size pseudo-random stream (xorshift64*), the same on every machine. */
static uint64_t seed = 88172645463325252ULL;
static uint64_t next_random(void) {
    seed ^= seed >> 12;
    seed ^= seed << 25;
    seed ^= seed >> 27;
    return seed * 2685821657736338717ULL;
}

enum { ROWS = 1000 };

/* One window of two columns: user_id (integers) and country (text). */
typedef struct {
    int64_t ids[ROWS];
    uint8_t id_validity[ROWS];
    char text[ROWS * 64];
    uint32_t offsets[ROWS + 1];
    ch_column columns[2];
    ch_batch batch;
} window;

static const char *const COUNTRIES[] = {"US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "AU", "ES", "IT", "NL"};

/* `stuck` of the ids are 0, `absent` are null; `unique_countries`: every
 * country is a code of its own. */
static ch_batch *make_window(window *w, double stuck, double absent, bool unique_countries) {
    size_t used = 0;
    for (uint32_t r = 0; r < ROWS; r++) {
        double u = (double)(next_random() % 1000000) / 1e6;
        w->ids[r] = u < stuck ? 0 : (int64_t)(1 + next_random() % 200000);
        w->id_validity[r] = (double)(next_random() % 1000000) / 1e6 < absent ? CH_NULL : CH_PRESENT;
        w->offsets[r] = (uint32_t)used;
        if (unique_countries) {
            used += (size_t)sprintf(w->text + used, "X%u", r);
        } else {
            const char *c = COUNTRIES[next_random() % 12];
            memcpy(w->text + used, c, 2);
            used += 2;
        }
    }
    w->offsets[ROWS] = (uint32_t)used;
    memset(w->columns, 0, sizeof w->columns);
    w->columns[0].name = (detector_plugin_string_t){(uint8_t *)"user_id", 7};
    w->columns[0].values.tag = CH_INT64;
    w->columns[0].values.val.int64 = (detector_plugin_list_s64_t){w->ids, ROWS};
    w->columns[0].validity = (detector_plugin_list_u8_t){w->id_validity, ROWS};
    w->columns[1].name = (detector_plugin_string_t){(uint8_t *)"country", 7};
    w->columns[1].values.tag = CH_TEXT;
    w->columns[1].values.val.text.bytes = (detector_plugin_list_u8_t){(uint8_t *)w->text, used};
    w->columns[1].values.val.text.offsets = (detector_plugin_list_u32_t){w->offsets, ROWS + 1};
    memset(&w->batch, 0, sizeof w->batch);
    w->batch.row_count = ROWS;
    w->batch.columns = (clean_host_plugin_types_list_column_t){w->columns, 2};
    return &w->batch;
}

static window w;

static bool valid_utf8(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (!n) return false;
        for (int i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
        }
        p += n;
    }
    return true;
}

/* Analyse one window; returns its findings' count and keeps the analysis in *out. */
static size_t run(double stuck, double absent, bool unique_countries, ch_analysis *out) {
    ch_error error = {{0}};
    memset(out, 0, sizeof *out);
    if (!analyze(make_window(&w, stuck, absent, unique_countries), out, &error)) {
        fprintf(stderr, "analyze failed: %s\n", error.message);
        exit(1);
    }
    return out->findings.len;
}

/* `windows` clean windows, their analyses dropped. */
static void warm_up(int windows, bool unique_countries) {
    ch_analysis out;
    for (int i = 0; i < windows; i++) {
        run(0, 0, unique_countries, &out);
        ch_analysis_free(&out);
    }
}

/* Forget everything and apply `json` as the config. */
static bool fresh(const char *json, ch_error *error) {
    static ch_config parsed;
    forget();
    config.min_rows = 100;
    config.min_change = 0.2;
    config.warmup_windows = 10;
    config.fence = 3.0;
    return ch_config_parse(json, strlen(json), &parsed, error) && configure(&parsed, error);
}

/* Clean windows: a metric per column each, and never a finding. */
static bool quiet_on_clean_windows(void) {
    bool ok = true;
    ch_error error;
    CHECK(fresh("{}", &error), "%s", error.message);
    for (int i = 0; i < 200; i++) {
        ch_analysis out;
        size_t findings = run(0, 0.01, false, &out);
        CHECK(findings == 0, "window %d: %.*s", i, findings ? (int)out.findings.ptr[0].message.len : 0, findings ? (char *)out.findings.ptr[0].message.ptr : "");
        CHECK(out.metrics.len == 2, "window %d: %zu metrics", i, out.metrics.len);
        ch_analysis_free(&out);
    }
    return ok;
}

/* Most ids stuck at 0: found in that window, with the rows holding 0. */
static bool finds_a_collapsed_key(void) {
    bool ok = true;
    ch_error error;
    CHECK(fresh("{}", &error), "%s", error.message);
    ch_analysis out;
    for (int i = 0; i < 10; i++) {
        CHECK(run(0, 0, false, &out) == 0, "warm-up window %d", i);
        ch_analysis_free(&out);
    }
    CHECK(run(0.6, 0, false, &out) == 1, "%zu findings", out.findings.len);
    if (out.findings.len == 1) {
        clean_host_plugin_types_finding_t *f = &out.findings.ptr[0];
        CHECK(f->column.is_some && f->column.val.len == 7 && !memcmp(f->column.val.ptr, "user_id", 7), "column");
        CHECK(f->value < 0.5 && f->severity == CH_CRITICAL, "value %f severity %d", f->value, f->severity);
        CHECK(f->sample_rows.len == CH_MAX_SAMPLE_ROWS, "%zu sample rows", f->sample_rows.len);
        for (size_t k = 0; k < f->sample_rows.len; k++) CHECK(w.ids[f->sample_rows.ptr[k]] == 0, "row %u holds %lld", f->sample_rows.ptr[k], (long long)w.ids[f->sample_rows.ptr[k]]);
        CHECK(strstr((char *)f->message.ptr, "0 is in") != NULL, "%.*s", (int)f->message.len, (char *)f->message.ptr);
    }
    ch_analysis_free(&out);
    /* The collapse did not join the usual range: the next clean window is quiet. */
    CHECK(run(0, 0, false, &out) == 0, "after the collapse");
    ch_analysis_free(&out);
    return ok;
}

/* A text key stuck at a long non-ASCII value: the message quotes it cut at a
 * character (the host refuses a string that is not UTF-8). */
static bool quotes_a_stuck_text_key_whole_characters_only(void) {
    bool ok = true;
    ch_error error;
    CHECK(fresh("{\"columns\": [\"country\"]}", &error), "%s", error.message);
    ch_analysis out;
    warm_up(10, true);
    make_window(&w, 0, 0, true);
    size_t used = 0;
    for (uint32_t r = 0; r < ROWS; r++) {
        w.offsets[r] = (uint32_t)used;
        if (r % 5 < 3) {
            /* 61 bytes: a 40-byte cut would fall inside the 20th character. */
            used += (size_t)sprintf(w.text + used, "a");
            for (int k = 0; k < 30; k++) used += (size_t)sprintf(w.text + used, "\xc3\xa9");
        } else {
            used += (size_t)sprintf(w.text + used, "X%u", r);
        }
    }
    w.offsets[ROWS] = (uint32_t)used;
    w.columns[1].values.val.text.bytes.len = used;
    memset(&out, 0, sizeof out);
    CHECK(analyze(&w.batch, &out, &error) && out.findings.len == 1, "%zu findings", out.findings.len);
    if (out.findings.len == 1) {
        char message[1024];
        snprintf(message, sizeof message, "%.*s", (int)out.findings.ptr[0].message.len, (char *)out.findings.ptr[0].message.ptr);
        CHECK(valid_utf8(message) && strstr(message, "\"... is in 600 rows"), "%s", message);
    }
    ch_analysis_free(&out);
    return ok;
}

/* A category column that suddenly holds a value per row. */
static bool finds_ids_in_a_category_column(void) {
    bool ok = true;
    ch_error error;
    CHECK(fresh("{}", &error), "%s", error.message);
    ch_analysis out;
    warm_up(12, false);
    CHECK(run(0, 0, true, &out) == 1, "%zu findings", out.findings.len);
    if (out.findings.len == 1) {
        CHECK(out.findings.ptr[0].value == 1.0, "%f", out.findings.ptr[0].value);
        CHECK(!memcmp(out.findings.ptr[0].column.val.ptr, "country", 7), "column");
    }
    ch_analysis_free(&out);
    return ok;
}

/* A change that lasts is a new normal: alerted NEW_NORMAL times, then learnt. */
static bool a_lasting_change_becomes_the_new_normal(void) {
    bool ok = true;
    ch_error error;
    CHECK(fresh("{}", &error), "%s", error.message);
    ch_analysis out;
    warm_up(10, false);
    size_t alerted = 0;
    for (int i = 0; i < 40; i++) {
        alerted += run(0.5, 0, false, &out);
        ch_analysis_free(&out);
    }
    CHECK(alerted == NEW_NORMAL, "%zu windows alerted", alerted);
    return ok;
}

/* Too few present rows: not measured, not judged. */
static bool sparse_columns_are_not_judged(void) {
    bool ok = true;
    ch_error error;
    CHECK(fresh("{\"columns\": [\"user_id\"]}", &error), "%s", error.message);
    ch_analysis out;
    CHECK(run(0, 0.95, false, &out) == 0 && out.metrics.len == 0, "%zu metrics", out.metrics.len);
    ch_analysis_free(&out);
    CHECK(run(0, 0, false, &out) == 0 && out.metrics.len == 1, "only the column configured: %zu metrics", out.metrics.len);
    ch_analysis_free(&out);
    return ok;
}

static bool bad_config_is_refused(void) {
    bool ok = true;
    ch_error error;
    CHECK(!fresh("{\"min_change\": 0.3, \"fences\": 2, \"colums\": []}", &error), "unknown keys");
    CHECK(!strcmp(error.message, "unknown config key(s): fences, colums"), "%s", error.message);
    CHECK(!fresh("{\"min_change\": \"big\"}", &error) && strstr(error.message, "min_change must be a number"), "%s", error.message);
    CHECK(!fresh("{\"min_change\": 2}", &error) && strstr(error.message, "min_change"), "%s", error.message);
    CHECK(!fresh("{\"columns\": [1]}", &error) && strstr(error.message, "array of strings"), "%s", error.message);
    CHECK(!fresh("{\"min_rows\": 10,}", &error) && strstr(error.message, "config:"), "%s", error.message);
    CHECK(!fresh("[1]", &error) && strstr(error.message, "not a JSON object"), "%s", error.message);
    CHECK(!fresh("{\"columns\": [\"a\\\"b\", \"c\"], \"fence\": 2.5, \"x\": {\"y\": [1, {\"z\": null}]}}", &error), "nested value parsed");
    CHECK(!strcmp(error.message, "unknown config key(s): x"), "%s", error.message);
    CHECK(!fresh("{\"min_rows\": 3.5}", &error) && strstr(error.message, "whole numbers"), "%s", error.message);
    CHECK(fresh(" {\"columns\": [\"a\\\"b\", \"c\"], \"fence\": 2.5e0 } ", &error), "%s", error.message);
    CHECK(config.column_count == 2 && !strcmp(config.columns[0], "a\"b") && config.fence == 2.5, "parsed");
    /* Nesting past CH_CONFIG_DEPTH is refused, not recursed into; within it, read. */
    for (int depth = 30; depth <= 100; depth += 70) {
        char deep[300] = "{\"x\": ";
        for (int i = 0; i < depth; i++) strcat(deep, "[");
        for (int i = 0; i < depth; i++) strcat(deep, "]");
        strcat(deep, "}");
        ch_config parsed;
        bool read = ch_config_parse(deep, strlen(deep), &parsed, &error);
        CHECK(read == (depth < CH_CONFIG_DEPTH), "%d deep: %s", depth, read ? "read" : error.message);
    }
    /* A long message is cut at a character, never inside one. */
    char names[1200] = "{";
    for (int i = 0; i < 40; i++) strcat(names, i ? ", \"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\": 1" : "\"\xc3\xa9\": 1");
    strcat(names, "}");
    CHECK(!fresh(names, &error), "unknown keys");
    CHECK(strlen(error.message) < sizeof error.message && valid_utf8(error.message), "cut inside a character: %s", error.message);
    return ok;
}

/* Hostile config text: mutations of a valid config (bytes flipped, cut,
 * NULs, brackets, quotes and backslashes spliced in) are parsed or refused,
 * never read out of bounds (ASan in scripts/test), and whatever parses
 * reads back within its own text. */
static bool hostile_config_is_parsed_or_refused(void) {
    bool ok = true;
    static const char valid[] = "{\"columns\": [\"user_id\", \"e\\\"mail\"], \"min_rows\": 50, \"fence\": 2.5e0, \"x\": {\"y\": [true, null, -1]}}";
    static const char splice[] = "{}[]\",:\\ \0e-+.tn";
    size_t parsed = 0;
    for (int round = 0; round < 200000; round++) {
        char mutated[sizeof valid];
        memcpy(mutated, valid, sizeof valid);
        for (int edits = 1 + (int)(next_random() % 4); edits > 0; edits--) mutated[next_random() % (sizeof valid - 1)] = splice[next_random() % (sizeof splice - 1)];
        size_t len = sizeof valid - 1;
        len -= next_random() % 3 == 0 ? next_random() % len : 0;
        /* Its own buffer of exactly its length: a read past the end is caught. */
        char *text = malloc(len ? len : 1);
        memcpy(text, mutated, len);
        ch_config parsed_config;
        ch_error error;
        if (ch_config_parse(text, len, &parsed_config, &error)) {
            parsed++;
            for (size_t i = 0; i < parsed_config.count; i++) {
                CHECK(parsed_config.keys[i].ptr >= text && parsed_config.keys[i].ptr + parsed_config.keys[i].len <= text + len, "key outside the text");
                CHECK(parsed_config.values[i].ptr >= text && parsed_config.values[i].ptr + parsed_config.values[i].len <= text + len, "value outside the text");
            }
            char **items;
            size_t count;
            double number;
            char name[16];
            if (ch_config_strings(&parsed_config, "columns", &items, &count, &error)) free(items);
            ch_config_number(&parsed_config, "min_rows", &number, &error);
            ch_config_string(&parsed_config, "x", name, sizeof name, &error);
        }
        free(text);
    }
    CHECK(parsed > 0, "no mutation parsed");
    return ok;
}

/* A snapshot restored into a fresh detector judges at once; a cut one is refused. */
static bool state_round_trips(void) {
    bool ok = true;
    ch_error error;
    CHECK(fresh("{}", &error), "%s", error.message);
    ch_analysis out;
    warm_up(10, false);
    ch_buffer state = {NULL, 0, 0};
    snapshot(&state);
    forget();
    ch_reader reader = {state.ptr, state.len, 0, false};
    CHECK(restore(&reader, &error) && !reader.cut && reader.at == state.len, "restore: %s", error.message);
    CHECK(run(0.6, 0, false, &out) == 1, "judged after restore without a warm-up");
    ch_analysis_free(&out);
    for (size_t cut = 0; cut < state.len; cut += 7) {
        ch_reader part = {state.ptr, cut, 0, false};
        bool restored = restore(&part, &error);
        CHECK(!restored || part.cut || cut == 0, "a state cut at %zu bytes was taken", cut);
    }
    /* A share that cannot be (NaN) is refused, not taken. */
    uint8_t *bad = malloc(state.len);
    memcpy(bad, state.ptr, state.len);
    double nan = NAN;
    memcpy(bad + state.len - 8, &nan, 8);
    ch_reader poisoned = {bad, state.len, 0, false};
    CHECK(!restore(&poisoned, &error) && strstr(error.message, "out of [0, 1]") && history_count == 0, "%s", error.message);
    free(bad);
    /* Another version's state: learnt anew, never misread. */
    uint8_t other[16] = {9};
    ch_reader old = {other, sizeof other, 0, false};
    CHECK(restore(&old, &error) && old.at == sizeof other && history_count == 0, "another version");
    free(state.ptr);
    return ok;
}

int main(void) {
    bool (*const tests[])(void) = {
        quiet_on_clean_windows, finds_a_collapsed_key, quotes_a_stuck_text_key_whole_characters_only, finds_ids_in_a_category_column, a_lasting_change_becomes_the_new_normal,
        sparse_columns_are_not_judged, bad_config_is_refused, hostile_config_is_parsed_or_refused, state_round_trips,
    };
    clock_t started = clock();
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) tests[i]() ? passed++ : failed++;
    double seconds = (double)(clock() - started) / CLOCKS_PER_SEC;
    if (failed) {
        printf("%d passed, %d failed in %.2fs\n", passed, failed, seconds);
        return 1;
    }
    printf("%d passed in %.2fs\n", passed, seconds);
    return 0;
}
