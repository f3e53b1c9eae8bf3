#include "memory/budget.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GIB (1024.0 * 1024.0 * 1024.0)

uint64_t kvs_budget_bytes(uint64_t total, double utilization)
{
    long double b = (long double)total * (long double)utilization;
    uint64_t r = (uint64_t)b;
    if ((long double)r < b)
        r++;
    return r > total ? total : r;
}

static int64_t floor_div(int64_t a, int64_t b) { return a < 0 ? -((-a + b - 1) / b) : a / b; }

/* "12.34 GiB", or "0.0024 GiB (2.50 MiB)" below 1 GiB, so that small
 * figures do not all read 0.00. */
static const char *gib(uint64_t bytes, char *buf, size_t cap)
{
    if (bytes >= (uint64_t)GIB)
        snprintf(buf, cap, "%.2f GiB", bytes / GIB);
    else if (bytes >= 1048576)
        snprintf(buf, cap, "%.4f GiB (%.2f MiB)", bytes / GIB, bytes / 1048576.0);
    else
        snprintf(buf, cap, "%.4f GiB (%llu bytes)", bytes / GIB, (unsigned long long)bytes);
    return buf;
}
#define GIB_S(x, b) gib((x), (b), sizeof(b))

/* Smallest utilization, in steps of 0.0001, whose budget holds `need` bytes. */
static double util_for(uint64_t need, uint64_t total)
{
    double u = ceil((double)need / (double)total * 10000.0) / 10000.0;
    while (u < 1.0 && kvs_budget_bytes(total, u) < need)
        u += 0.0001;
    return u;
}

/* Largest utilization, in steps of 0.0001, whose budget is free now. */
static double util_free(uint64_t free, uint64_t total)
{
    double u = floor((double)free / (double)total * 10000.0) / 10000.0;
    while (u > 0.0 && kvs_budget_bytes(total, u) > free)
        u -= 0.0001;
    return u > 0.0 ? u : 0.0;
}

double kvs_budget_max_free_utilization(uint64_t total, uint64_t free)
{
    if (total == 0)
        return 0.0;
    return util_free(free < total ? free : total, total);
}

/* "--gpu-memory-utilization U", with what stands in its way. */
static void util_advice(const kvs_budget_in *in, uint64_t need, char *buf, size_t cap)
{
    double u = util_for(need, in->total);
    double uf = util_free(in->free, in->total);
    const char *lb = in->overhead_unknown ? "at least " : "";
    if (need > in->total)
        snprintf(buf, cap, "more memory than the device has (%s%.2f x its total)", lb,
                 (double)need / (double)in->total);
    else if (u > uf)
        snprintf(buf, cap, "%s--gpu-memory-utilization %.4f, more than is free now (at most %.4f)", lb, u, uf);
    else
        snprintf(buf, cap, "%s--gpu-memory-utilization %.4f", lb, u);
}

kvs_status kvs_budget_check_free(uint64_t total, uint64_t free, uint64_t used_by_others, double utilization,
                                 kvs_error *err)
{
    if (!(utilization > 0.0 && utilization <= 1.0))
        return kvs_fail(err, KVS_E_INVALID, "--gpu-memory-utilization must be in (0, 1], got %g", utilization);
    uint64_t budget = kvs_budget_bytes(total, utilization);
    if (free >= budget)
        return KVS_OK;
    char b1[64], b2[64], b3[64], b4[64];
    double fits = kvs_budget_max_free_utilization(total, free);
    if (fits <= 0.0)
        return kvs_fail(err, KVS_E_BUDGET,
                        "no memory is free on the device: %s of %s is used by other processes",
                        GIB_S(used_by_others, b1), GIB_S(total, b2));
    return kvs_fail(err, KVS_E_BUDGET,
                    "free memory on the device (%s of %s; %s used by other processes) is less than the "
                    "requested budget (%s = %.4g x total); the largest --gpu-memory-utilization that fits "
                    "now is %.4f",
                    GIB_S(free, b1), GIB_S(total, b2), GIB_S(used_by_others, b3), GIB_S(budget, b4),
                    utilization, fits);
}

kvs_status kvs_budget_solve(const kvs_budget_in *in, kvs_budget *out, kvs_error *err)
{
    memset(out, 0, sizeof *out);
    char b1[64], b2[64], b3[64], b4[64], b5[64], b6[64], b7[64], b8[64], adv[160];
    if (in->total == 0)
        return kvs_fail(err, KVS_E_INVALID, "the device reports no memory");
    kvs_status st = kvs_budget_check_free(in->total, in->free, in->used_by_others, in->utilization, err);
    if (st != KVS_OK)
        return st;
    if (in->block_bytes == 0 || in->block_size < 1)
        return kvs_fail(err, KVS_E_INVALID, "block size must be positive");
    out->budget = kvs_budget_bytes(in->total, in->utilization);
    uint64_t fixed = in->weights + in->activation_peak + in->graphs + in->overhead + in->serving;
    out->non_kv = fixed;
    uint64_t avail_dev = in->total > in->used_by_others ? in->total - in->used_by_others : 0;
    out->slack_outside = avail_dev > out->budget ? avail_dev - out->budget : 0;

    /* One request of the asked length (or of the model's context, for auto). */
    int64_t want_len = in->max_model_len > 0 ? in->max_model_len : (in->model_max_len > 0 ? in->model_max_len : 1);
    uint64_t per_block = in->block_bytes + in->overhead_per_block;
    uint64_t want_blocks = ((uint64_t)want_len + (uint64_t)in->block_size - 1) / (uint64_t)in->block_size;

    int64_t kv_avail = (int64_t)out->budget - (int64_t)fixed;
    int64_t blocks = floor_div(kv_avail, (int64_t)per_block);
    if (in->kv_cache_memory > 0) {
        uint64_t asked = in->kv_cache_memory / in->block_bytes;
        if (asked < 1)
            return kvs_fail(err, KVS_E_BUDGET,
                            "--kv-cache-memory %s is less than one KV block (%s for %d tokens)",
                            GIB_S(in->kv_cache_memory, b1), GIB_S(in->block_bytes, b2), in->block_size);
        if ((int64_t)asked > blocks) {
            util_advice(in, fixed + asked * per_block, adv, sizeof adv);
            return kvs_fail(err, KVS_E_BUDGET,
                            "--kv-cache-memory %s does not fit the budget: %s budget - %s for weights, "
                            "activations, graphs, overhead and serving reserve leaves %s%s; it needs %s",
                            GIB_S(in->kv_cache_memory, b1), GIB_S(out->budget, b2), GIB_S(fixed, b3),
                            kv_avail > 0 ? GIB_S((uint64_t)kv_avail, b4) : "nothing",
                            in->overhead_per_block ? " (each block also costs host bookkeeping)" : "", adv);
        }
        blocks = (int64_t)asked;
    }
    if (blocks < 1) {
        util_advice(in, fixed + want_blocks * per_block, adv, sizeof adv);
        if (kv_avail < 0 && in->overhead_unknown)
            return kvs_fail(err, KVS_E_BUDGET,
                            "the budget %s (%.4g x %s) does not hold the model: weights %s + activation peak "
                            "%s + graphs %s = %s, before any runtime overhead or KV cache; one request of "
                            "%lld tokens needs %s",
                            GIB_S(out->budget, b1), in->utilization, GIB_S(in->total, b2), GIB_S(in->weights, b3),
                            GIB_S(in->activation_peak, b4), GIB_S(in->graphs, b5), GIB_S(fixed, b7),
                            (long long)want_len, adv);
        if (kv_avail < 0)
            return kvs_fail(err, KVS_E_BUDGET,
                            "the budget %s (%.4g x %s) does not hold the model: weights %s + activation peak "
                            "%s + graphs %s + runtime overhead %s + serving reserve %s = %s, leaving no KV cache; "
                            "one request of %lld tokens needs %s",
                            GIB_S(out->budget, b1), in->utilization, GIB_S(in->total, b2), GIB_S(in->weights, b3),
                            GIB_S(in->activation_peak, b4), GIB_S(in->graphs, b5), GIB_S(in->overhead, b6),
                            GIB_S(in->serving, b8), GIB_S(fixed, b7), (long long)want_len, adv);
        return kvs_fail(err, KVS_E_BUDGET,
                        "no memory is left for the KV cache: the budget %s - %s for weights, activations, "
                        "graphs, overhead and serving reserve leaves %s, less than one KV block (%s); one request of %lld "
                        "tokens needs %s",
                        GIB_S(out->budget, b1), GIB_S(fixed, b2), GIB_S((uint64_t)kv_avail, b3),
                        GIB_S(per_block, b4), (long long)want_len, adv);
    }
    if (blocks > INT32_MAX)
        blocks = INT32_MAX;
    out->num_blocks = (int32_t)blocks;
    out->overhead = in->overhead + (uint64_t)blocks * in->overhead_per_block;
    out->non_kv = in->weights + in->activation_peak + in->graphs + out->overhead + in->serving;
    out->kv_cache_bytes = (uint64_t)blocks * in->block_bytes;
    out->kv_cache_tokens = blocks * (int64_t)in->block_size;
    out->slack_inside = out->budget - out->non_kv - out->kv_cache_bytes;

    int64_t fit_len = out->kv_cache_tokens;
    if (in->max_model_len > 0) {
        if (in->max_model_len > fit_len) {
            uint64_t need_kv = want_blocks * in->block_bytes;
            if (in->kv_cache_memory > 0)
                snprintf(adv, sizeof adv, "--kv-cache-memory %llu (%s) or more",
                         (unsigned long long)need_kv, GIB_S(need_kv, b5));
            else
                util_advice(in, fixed + want_blocks * per_block, adv, sizeof adv);
            const char *ub = in->overhead_unknown ? "at most " : "";
            return kvs_fail(err, KVS_E_BUDGET,
                            "max_model_len %d needs %s of KV cache (%llu blocks of %d tokens) but %sonly %s "
                            "(%lld tokens) is available%s; the largest max_model_len that fits is %s%lld "
                            "(--max-model-len auto picks it), or the asked length needs %s",
                            in->max_model_len, GIB_S(need_kv, b1), (unsigned long long)want_blocks,
                            in->block_size, ub, GIB_S(out->kv_cache_bytes, b2), (long long)out->kv_cache_tokens,
                            in->overhead_unknown ? " before the runtime overhead" : "", ub,
                            (long long)(in->fit_len_hint > 0 ? in->fit_len_hint : fit_len), adv);
        }
        out->max_model_len = in->max_model_len;
    } else {
        int64_t len = in->model_max_len > 0 ? in->model_max_len : fit_len;
        out->max_model_len = (int32_t)(len < fit_len ? len : fit_len);
    }
    out->max_concurrency = (double)out->kv_cache_tokens / (double)out->max_model_len;
    return KVS_OK;
}

bool kvs_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return false;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0.0) || !isfinite(v))
        return false;
    while (*end == ' ')
        end++;
    static const struct { const char *suffix; double mult; } units[] = {
        {"", 1.0}, {"B", 1.0},
        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", GIB}, {"TiB", GIB * 1024.0},
        {"K", 1024.0}, {"M", 1048576.0}, {"G", GIB}, {"T", GIB * 1024.0},
        {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            double bytes = v * units[i].mult;
            if (bytes > 1.8e19)
                return false;
            /* round, not llround: a long stops at 2^63, short of the limit above */
            *out = (uint64_t)round(bytes);
            return true;
        }
    }
    return false;
}

const char *kvs_format_gib(uint64_t bytes, char *buf, int cap)
{
    snprintf(buf, (size_t)cap, "%.2f GiB", bytes / GIB);
    return buf;
}
