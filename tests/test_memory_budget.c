/*
 * test_memory_budget.c - the budget solver (memory/budget.h) against the
 * issue's formula, computed here independently, and its error messages:
 * each names the figures, and each suggestion it makes (a utilization, a
 * max_model_len) is checked to be exactly the boundary: it fits, and one
 * step less does not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "memory/budget.h"

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)

/* A llama-ish instance on a 1 GiB device: blocks of 20 KiB plus 120 bytes of host bookkeeping. */
static kvs_budget_in base_in(void)
{
    return (kvs_budget_in){
        .total = GIB, .free = GIB, .used_by_others = 0, .utilization = 0.92,
        .weights = 300 * MIB + 123, .activation_peak = 40 * MIB + 64, .graphs = 0, .overhead = 9 * MIB + 4096,
        .overhead_per_block = 120, .block_bytes = 20480, .block_size = 16, .max_model_len = 0,
        .model_max_len = 2048,
    };
}

/* ceil(total * u) for u with at most 4 decimals, in integers. */
static uint64_t budget_ref(uint64_t total, double u)
{
    uint64_t num = (uint64_t)(u * 10000.0 + 0.5);
    return (uint64_t)(((__uint128_t)total * num + 9999) / 10000);
}

static void test_formula(void **state)
{
    double utils[] = {0.5, 0.92, 0.9, 0.95, 1.0, 0.3333};
    for (size_t i = 0; i < sizeof utils / sizeof utils[0]; i++) {
        kvs_budget_in in = base_in();
        in.utilization = utils[i];
        in.total = 3 * GIB + 12345;
        in.free = in.total;
        kvs_budget b;
        kvs_error err;
        assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_OK);
        uint64_t budget = budget_ref(in.total, utils[i]);
        assert_int_equal(b.budget, budget);
        assert_int_equal(kvs_budget_bytes(in.total, utils[i]), budget);
        uint64_t fixed = in.weights + in.activation_peak + in.graphs + in.overhead;
        uint64_t blocks = (budget - fixed) / (in.block_bytes + in.overhead_per_block);
        assert_int_equal(b.num_blocks, blocks);
        assert_int_equal(b.kv_cache_bytes, blocks * in.block_bytes);
        assert_int_equal(b.kv_cache_tokens, blocks * 16);
        assert_int_equal(b.overhead, in.overhead + blocks * 120);
        assert_int_equal(b.non_kv, fixed + blocks * 120);
        assert_int_equal(b.slack_inside, budget - fixed - blocks * (in.block_bytes + 120));
        assert_true(b.slack_inside < in.block_bytes + in.overhead_per_block);
        assert_int_equal(b.max_model_len, 2048);   /* auto: the model's context, which fits */
        assert_true(b.max_concurrency == (double)b.kv_cache_tokens / 2048.0);
        assert_int_equal(b.slack_outside, in.total - budget);
    }
}

static void test_auto_length_lowered_to_fit(void **state)
{
    kvs_budget_in in = base_in();
    in.total = 400 * MIB;
    in.free = in.total;
    in.utilization = 0.9;
    in.model_max_len = 131072;
    kvs_budget b;
    kvs_error err;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_OK);
    assert_true(b.kv_cache_tokens < 131072);
    assert_int_equal(b.max_model_len, b.kv_cache_tokens);
    assert_true(b.max_concurrency == 1.0);
}

static void test_free_less_than_budget(void **state)
{
    kvs_budget_in in = base_in();
    in.total = 24 * GIB;
    in.used_by_others = 3 * GIB + 77 * MIB;
    in.free = in.total - in.used_by_others;
    kvs_budget b;
    kvs_error err;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "3.08 GiB used by other processes"));
    const char *p = strstr(err.msg, "largest --gpu-memory-utilization that fits now is ");
    assert_non_null(p);
    double u = atof(p + strlen("largest --gpu-memory-utilization that fits now is "));
    /* The boundary: u fits what is free, u + 0.0001 does not. */
    assert_true(kvs_budget_bytes(in.total, u) <= in.free);
    assert_true(kvs_budget_bytes(in.total, u + 0.0001) > in.free);
    assert_true(kvs_budget_max_free_utilization(in.total, in.free) == u);
    in.utilization = u;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_OK);
}

static void test_invalid_utilization(void **state)
{
    double bad[] = {0.0, -0.1, 1.0001, 1.5, 0.0 / 0.0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvs_budget_in in = base_in();
        in.utilization = bad[i];
        kvs_budget b;
        kvs_error err;
        assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_INVALID);
        assert_non_null(strstr(err.msg, "--gpu-memory-utilization must be in (0, 1]"));
    }
}

/* The utilization in the message after `key`, checked to be the smallest
 * that holds one request of `len` tokens (0: in's own settings). */
static void check_advised_utilization(const char *msg, const char *key, const kvs_budget_in *in, int32_t len)
{
    const char *p = strstr(msg, key);
    if (!p)
        fail_msg("no '%s' in: %s", key, msg);
    double u = atof(p + strlen(key));
    kvs_budget_in t = *in;
    kvs_budget b;
    kvs_error err;
    if (len > 0)
        t.max_model_len = len;
    t.utilization = u;
    assert_int_equal(kvs_budget_solve(&t, &b, &err), KVS_OK);
    t.utilization = u - 0.0001;
    assert_int_equal(kvs_budget_solve(&t, &b, &err), KVS_E_BUDGET);
}

static void test_zero_blocks(void **state)
{
    kvs_budget_in in = base_in();
    uint64_t fixed = in.weights + in.activation_peak + in.graphs + in.overhead;
    /* A budget that leaves half a block. */
    in.total = fixed + 10000;
    in.free = in.total;
    in.utilization = 1.0;
    kvs_budget b;
    kvs_error err;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "no memory is left for the KV cache"));
    assert_non_null(strstr(err.msg, "less than one KV block"));
    assert_non_null(strstr(err.msg, "more memory than the device has"));
    /* A budget short of the fixed terms. */
    in.total = 1 * GIB;
    in.free = in.total;
    in.utilization = 0.2;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "does not hold the model"));
    assert_non_null(strstr(err.msg, "weights 0.2930 GiB"));
    check_advised_utilization(err.msg, "needs --gpu-memory-utilization ", &in, 2048);
    /* The same before the overhead is known: a lower bound, said so. */
    in.overhead_unknown = true;
    in.overhead = 0;
    in.utilization = 0.3;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "before any runtime overhead"));
    assert_non_null(strstr(err.msg, "at least --gpu-memory-utilization"));
}

static void test_max_model_len_does_not_fit(void **state)
{
    kvs_budget_in in = base_in();
    in.total = 395 * MIB;
    in.free = in.total;
    in.max_model_len = 8192;
    in.model_max_len = 8192;
    in.utilization = 0.9;
    kvs_budget b;
    kvs_error err;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    /* Needed: 512 blocks of 20480 bytes = 10 MiB; available: what the auto length gets. */
    assert_non_null(strstr(err.msg, "max_model_len 8192 needs 0.0098 GiB (10.00 MiB) of KV cache (512 blocks"));
    kvs_budget_in a = in;
    a.max_model_len = 0;
    a.model_max_len = 8192;
    kvs_budget ab;
    assert_int_equal(kvs_budget_solve(&a, &ab, &err), KVS_OK);
    char want[128];
    snprintf(want, sizeof want, "largest max_model_len that fits is %lld ", (long long)ab.kv_cache_tokens);
    if (!strstr(err.msg, want))
        fail_msg("expected '%s' in: %s", want, err.msg);
    snprintf(want, sizeof want, "(%lld tokens) is available", (long long)ab.kv_cache_tokens);
    assert_non_null(strstr(err.msg, want));
    /* ... and the suggested length fits, one more token does not. */
    kvs_budget_in t = in;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    t.max_model_len = (int32_t)ab.kv_cache_tokens;
    assert_int_equal(kvs_budget_solve(&t, &b, &err), KVS_OK);
    t.max_model_len++;
    assert_int_equal(kvs_budget_solve(&t, &b, &err), KVS_E_BUDGET);
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    check_advised_utilization(err.msg, "needs --gpu-memory-utilization ", &in, 0);
}

static void test_kv_cache_memory(void **state)
{
    kvs_budget_in in = base_in();
    kvs_budget b;
    kvs_error err;
    in.kv_cache_memory = 100 * 20480 + 5;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_OK);
    assert_int_equal(b.num_blocks, 100);
    assert_int_equal(b.kv_cache_bytes, 100 * 20480);
    assert_int_equal(b.overhead, in.overhead + 100 * 120);
    assert_int_equal(b.budget, budget_ref(GIB, 0.92));      /* the budget still applies */
    /* Larger than the budget leaves. */
    in.kv_cache_memory = 2 * GIB;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "--kv-cache-memory 2.00 GiB does not fit the budget"));
    assert_non_null(strstr(err.msg, "more memory than the device has"));
    in.kv_cache_memory = 620 * MIB;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    check_advised_utilization(err.msg, "needs --gpu-memory-utilization ", &in, 0);
    /* Less than one block. */
    in.kv_cache_memory = 100;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "less than one KV block"));
    /* Enough blocks, but not for one request of max_model_len. */
    in.kv_cache_memory = 10 * 20480;
    in.max_model_len = 2048;
    assert_int_equal(kvs_budget_solve(&in, &b, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "largest max_model_len that fits is 160 "));
    assert_non_null(strstr(err.msg, "--kv-cache-memory 2621440"));
}

static void test_parse_size(void **state)
{
    struct { const char *s; uint64_t v; } ok[] = {
        {"123", 123}, {"1GiB", GIB}, {"1.5GiB", GIB + GIB / 2}, {"512MiB", 512 * MIB}, {"1GB", 1000000000},
        {"2G", 2 * GIB}, {"64 MiB", 64 * MIB}, {"0", 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 1;
        assert_true(kvs_parse_size(ok[i].s, &v));
        assert_int_equal(v, ok[i].v);
    }
    const char *bad[] = {"", "lots", "-5", "1XB", "1e30GiB", "nan", "inf", "GiB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        if (kvs_parse_size(bad[i], &v))
            fail_msg("'%s' parsed as %llu", bad[i], (unsigned long long)v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formula),
        cmocka_unit_test(test_auto_length_lowered_to_fit),
        cmocka_unit_test(test_free_less_than_budget),
        cmocka_unit_test(test_invalid_utilization),
        cmocka_unit_test(test_zero_blocks),
        cmocka_unit_test(test_max_model_len_does_not_fit),
        cmocka_unit_test(test_kv_cache_memory),
        cmocka_unit_test(test_parse_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
