/*
 * test_memory_ledger.c - the ledger proves the memory budget at run time.
 *
 * Starts real instances with kvs_launch() on stories260K (the shared test
 * model) and serves many requests through the engine:
 *   - after start-up the ledger holds exactly weights + activation arena +
 *     KV cache, and its allocation count never moves again while serving,
 *     including with preemption by a deliberately small KV cache;
 *   - the block pool holds exactly the report's num_blocks;
 *   - with the KV cache sized by the budget and every block written, the
 *     process's resident memory (VmRSS, VmHWM in /proc/self/status) stays
 *     within the budget plus a small tolerance.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/launch.h"

#if defined(__SANITIZE_ADDRESS__)
#define KVS_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVS_TEST_ASAN 1
#endif
#endif

/* Resident memory may exceed the budget by the requests' own host state
 * (token lists, text) and page rounding; AddressSanitizer adds shadow
 * memory and a quarantine for every host allocation made while serving. */
#ifdef KVS_TEST_ASAN
#define RSS_TOLERANCE (32ull << 20)
#define SMALL_DEVICE (64ull << 20)      /* the sanitizer runtime alone holds about 20 MiB */
#else
#define RSS_TOLERANCE (2ull << 20)
#define SMALL_DEVICE (24ull << 20)
#endif

static char model_path[4096];

static int setup(void **state)
{
    const char *shared = getenv("KVS_SHARED");
    snprintf(model_path, sizeof model_path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    return 0;
}

/* A field of /proc/self/status in bytes ("VmRSS", "VmHWM"). */
static uint64_t proc_status(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    uint64_t kb = 0;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            kb = strtoull(line + n + 1, NULL, 10);
    fclose(f);
    assert_true(kb > 0);
    return kb * 1024;
}

/* Queue n requests of distinct prompts of `len` tokens, each generating
 * `gen` tokens past EOS. */
static void add_requests(kvs_instance *in, int n, int len, int gen, uint64_t first_id)
{
    for (int i = 0; i < n; i++) {
        int32_t prompt[256];
        assert_true(len <= 256);
        uint64_t x = (first_id + (uint64_t)i) * 0x9e3779b97f4a7c15ull + 1;
        prompt[0] = 1;
        for (int j = 1; j < len; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            prompt[j] = 3 + (int32_t)((x >> 33) % 500);
        }
        kvs_request_params p = kvs_request_defaults();
        p.max_tokens = gen;
        p.ignore_eos = true;
        p.sampling.temperature = 0.8f;
        p.sampling.has_seed = true;
        p.sampling.seed = first_id + (uint64_t)i;
        kvs_error err;
        kvs_status st = kvs_engine_add(in->engine, first_id + (uint64_t)i, prompt, (size_t)len, &p, &err);
        if (st != KVS_OK)
            fail_msg("add: %s", err.msg);
    }
}

/* Step until idle, checking after every step that nothing was allocated or
 * freed on the device.  Returns the number of tokens generated. */
static uint64_t serve(kvs_instance *in, const kvs_ledger *at_start, uint64_t *max_blocks_used)
{
    uint64_t tokens = 0;
    while (kvs_engine_has_work(in->engine)) {
        const kvs_output *outs;
        size_t n;
        kvs_error err;
        if (kvs_engine_step(in->engine, &outs, &n, &err) != KVS_OK)
            fail_msg("step: %s", err.msg);
        for (size_t i = 0; i < n; i++)
            tokens += outs[i].token >= 0;
        kvs_ledger now;
        kvs_ledger_snapshot(&in->backend->ledger, &now);
        assert_int_equal(now.n_allocs, at_start->n_allocs);
        assert_int_equal(now.n_frees, at_start->n_frees);
        assert_int_equal(now.cur_total, at_start->cur_total);
        kvs_engine_stats es;
        kvs_engine_get_stats(in->engine, &es);
        if ((uint64_t)es.kv_blocks_used > *max_blocks_used)
            *max_blocks_used = (uint64_t)es.kv_blocks_used;
    }
    return tokens;
}

static void check_ledger_at_start(kvs_instance *in, kvs_ledger *led)
{
    const kvs_memory_report *r = &in->report;
    kvs_ledger_snapshot(&in->backend->ledger, led);
    /* Exactly the three things a running instance holds. */
    assert_int_equal(led->cur[KVS_MEM_WEIGHTS], r->weights_bytes);
    assert_int_equal(led->cur[KVS_MEM_ACTIVATIONS], r->activation_peak_bytes);
    assert_int_equal(led->cur[KVS_MEM_ACTIVATIONS], in->runner->arena.fixed.bytes);
    assert_int_equal(led->cur[KVS_MEM_KV_CACHE], r->kv_cache_bytes);
    assert_int_equal(led->cur_total, r->weights_bytes + r->activation_peak_bytes + r->kv_cache_bytes);
    assert_int_equal(led->cur[KVS_MEM_GRAPHS] + led->cur[KVS_MEM_WORKSPACE] + led->cur[KVS_MEM_OTHER], 0);
    /* The profile's peak came from the ledger and equals the shapes' formula. */
    assert_int_equal(r->activation_peak_bytes, r->activation_formula_bytes);
    /* The KV cache is whole blocks, all of them in the engine's pool. */
    kvs_engine_stats es;
    kvs_engine_get_stats(in->engine, &es);
    assert_int_equal(es.kv_blocks_total, r->num_blocks);
    assert_int_equal(kvs_engine_get_config(in->engine)->num_blocks, r->num_blocks);
    assert_int_equal(r->kv_cache_bytes, (uint64_t)r->num_blocks * r->kv_bytes_per_token * (uint64_t)r->block_size);
    /* The ledger's peak (the profile, or now) stays within the budget with the overhead. */
    assert_true(led->peak_total + r->overhead_bytes <= r->budget_bytes);
    assert_true(r->peak_process_bytes <= r->budget_bytes);
}

/* A KV cache of 24 blocks of 16 tokens for 8 requests of 12 + 60 tokens
 * (5 blocks each): the scheduler must preempt, and still allocates nothing. */
static void test_no_allocation_while_serving_with_preemption(void **state)
{
    kvs_launch_opts o = kvs_launch_defaults();
    o.model_path = model_path;
    o.device_memory = 256ull << 20;
    o.n_threads = 2;
    o.max_model_len = 256;
    o.max_num_seqs = 8;
    o.max_num_batched_tokens = 64;
    o.kv_cache_memory = 24ull * 20480;   /* stories260K: 5 layers x 4 heads x 8 dims x 16 tokens x 2 x f32 */
    o.warn = NULL;
    kvs_instance *in;
    kvs_error err;
    if (kvs_launch(&in, &o, &err) != KVS_OK)
        fail_msg("launch: %s", err.msg);
    assert_int_equal(in->report.num_blocks, 24);
    kvs_ledger led;
    check_ledger_at_start(in, &led);

    uint64_t max_used = 0, tokens = 0;
    for (int round = 0; round < 3; round++) {
        add_requests(in, 8, 12, 60, 1000 * (uint64_t)(round + 1));
        tokens += serve(in, &led, &max_used);
    }
    kvs_engine_stats es;
    kvs_engine_get_stats(in->engine, &es);
    assert_int_equal(tokens, 3 * 8 * 60);
    assert_true(es.n_preemptions > 0);
    assert_int_equal(max_used, 24);            /* the whole cache was used */
    assert_int_equal(es.kv_blocks_total, 24);
    kvs_instance_free(in);
}

/* The KV cache sized by the budget of a small "device"; serving writes
 * every block; resident memory stays within the budget. */
static void test_resident_memory_within_budget(void **state)
{
    kvs_launch_opts o = kvs_launch_defaults();
    o.model_path = model_path;
    o.device_memory = SMALL_DEVICE;
    o.gpu_memory_utilization = 0.92;
    o.n_threads = 2;
    o.max_num_seqs = 16;
    o.max_num_batched_tokens = 256;
    o.max_structured_seqs = 1; /* the default 8 structured-output slots (12 MiB) do not fit this device */
    o.warn = NULL;
    kvs_instance *in;
    kvs_error err;
    if (kvs_launch(&in, &o, &err) != KVS_OK)
        fail_msg("launch: %s", err.msg);
    const kvs_memory_report *r = &in->report;
    assert_true(r->num_blocks > 64);
    assert_int_equal(r->structured_slots, 1);
    assert_true(r->structured_reserve_bytes > 0 && r->structured_reserve_bytes == r->serving_reserve_bytes);
    assert_true(r->slack_inside_bytes < r->kv_bytes_per_token * (uint64_t)r->block_size + r->overhead_per_block_bytes);
    kvs_ledger led;
    check_ledger_at_start(in, &led);

    /* More tokens than the cache holds, so the LRU free queue hands out
     * (and the kernels write) every block: rounds of 16 requests of 240
     * prompt + 16 output tokens (16 whole blocks each). */
    uint64_t max_used = 0, tokens = 0;
    int64_t per_round = 16 * 256;
    int rounds = (int)(r->kv_cache_tokens / per_round) + 2;
    for (int round = 0; round < rounds; round++) {
        add_requests(in, 16, 240, 16, 100000 * (uint64_t)(round + 1));
        tokens += serve(in, &led, &max_used);
        uint64_t rss = proc_status("VmRSS");
        if (rss > r->budget_bytes + RSS_TOLERANCE)
            fail_msg("round %d: VmRSS %llu > budget %llu + %llu", round, (unsigned long long)rss,
                     (unsigned long long)r->budget_bytes, (unsigned long long)RSS_TOLERANCE);
    }
    assert_int_equal(tokens, (uint64_t)rounds * 16 * 16);
    uint64_t hwm = proc_status("VmHWM");
    uint64_t rss = proc_status("VmRSS");
    print_message("budget %llu, non-KV %llu + KV %llu, VmRSS %llu, VmHWM %llu (%+lld vs budget)\n",
                  (unsigned long long)r->budget_bytes,
                  (unsigned long long)(r->budget_bytes - r->slack_inside_bytes - r->kv_cache_bytes),
                  (unsigned long long)r->kv_cache_bytes, (unsigned long long)rss, (unsigned long long)hwm,
                  (long long)hwm - (long long)r->budget_bytes);
    assert_true(hwm <= r->budget_bytes + RSS_TOLERANCE);
    /* Every block was written, so the process really holds its KV cache:
     * resident memory is at least the ledger. */
    assert_true(rss >= led.cur_total);
    kvs_instance_free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_allocation_while_serving_with_preemption),
        cmocka_unit_test(test_resident_memory_within_budget),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
