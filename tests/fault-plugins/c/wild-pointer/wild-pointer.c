/* wild-pointer: a C detector with the commonest C bug. Each call writes
 * through a pointer past the end of its linear memory, which traps (a
 * pointer gone wrong inside that memory can only harm the plugin itself:
 * the host copies nothing back but the call's answer). The host must
 * contain it like any trap: the call fails, the instance is rebuilt, the
 * plugin quarantined, and every other detector carries on. */
#include "clean_host.h"

static const ch_info INFO = {"wild-pointer", "0.1.0", "Writes out of bounds (a test of the sandbox)", NULL, 0, "{}"};

static bool configure(const ch_config *config, ch_error *error) {
    static const char *const known[] = {NULL};
    return ch_config_known(config, known, error);
}

static bool analyze(const ch_batch *batch, ch_analysis *out, ch_error *error) {
    (void)batch;
    (void)out;
    (void)error;
    volatile uint8_t *past_the_end = (volatile uint8_t *)(uintptr_t)(__builtin_wasm_memory_size(0) * 65536 + 4096);
    ch_log(CH_LOG_WARN, "wild-pointer: writing to %p", (void *)past_the_end);
    *past_the_end = 1;
    return true;
}

static void snapshot(ch_buffer *state) { (void)state; }

static bool restore(ch_reader *state, ch_error *error) {
    (void)error;
    ch_drop(state);
    return true;
}

CLEAN_HOST_DETECTOR(INFO, configure, analyze, snapshot, restore)
