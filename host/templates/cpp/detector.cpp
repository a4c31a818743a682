// {{name}}: flags a window where a column is mostly absent (null or missing).
//
// Change `analyze` to check what matters to you. `clean_host.h` beside this
// file has the helpers (C, usable as they are from C++); `wit/clean-host.wit`
// is the contract. Build with `clean-host plugin build .`: every .cpp and .c
// file of this folder is compiled (C++17 without exceptions: wasm32-wasi has none).
#include "clean_host.h"

#include <string>

static const ch_metric_info METRICS[] = {
    {"absent_share", "Share of a column's rows that are null or missing"},
};
static const ch_info INFO = {
    "{{name}}", "0.1.0", "Columns that are mostly null or missing", METRICS, 1,
    R"({"type":"object","properties":{"max_absent_share":{"type":"number"}}})",
};

// One instance serves one pipeline, one call at a time: state is plain globals.
static double max_absent_share = 0.5;

static bool configure(const ch_config *config, ch_error *error) {
    static const char *const known[] = {"max_absent_share", nullptr};
    return ch_config_known(config, known, error) && ch_config_number(config, "max_absent_share", &max_absent_share, error);
}

static bool analyze(const ch_batch *batch, ch_analysis *out, ch_error *) {
    for (size_t i = 0; i < batch->columns.len; i++) {
        const ch_column *column = &batch->columns.ptr[i];
        uint32_t counts[4];
        ch_count_states(column, batch->row_count, counts);
        double share = double(counts[CH_NULL] + counts[CH_MISSING]) / (batch->row_count ? batch->row_count : 1);
        ch_metric(out, "absent_share", column, share);
        if (share > max_absent_share) {
            ch_text name = ch_column_name(column);
            std::string message = std::to_string(int(share * 100 + 0.5)) + "% of '" + std::string(name.ptr, name.len) + "' is null or missing";
            ch_finding(out, "absent_share", column, share, max_absent_share, CH_WARNING, nullptr, 0, "%s", message.c_str());
        }
    }
    return true;
}

// Nothing to keep across reloads: a detector with baselines writes them here
// (ch_put_*) and reads them back in `restore` (ch_get_*).
static void snapshot(ch_buffer *) {}

// A state this version does not read (an older one's) is dropped, not refused:
// a refused restore keeps the old build running.
static bool restore(ch_reader *state, ch_error *) {
    ch_drop(state);
    return true;
}

CLEAN_HOST_DETECTOR(INFO, configure, analyze, snapshot, restore)
