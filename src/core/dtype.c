#include "core/dtype.h"

#include <math.h>
#include <strings.h>

#include "core/dtype_quant.h"

typedef struct {
    const char *name;
    uint16_t block_elems;
    uint16_t block_bytes;
    bool computable;
} dtype_info;

/* ggml's type table: ids with no entry are retired or unassigned. */
static const dtype_info DTYPES[KVS_DTYPE_MAX_ID] = {
    [0] = {"f32", 1, 4, true},        [1] = {"f16", 1, 2, true},
    [2] = {"q4_0", 32, 18, true},     [3] = {"q4_1", 32, 20, true},
    [6] = {"q5_0", 32, 22, true},    [7] = {"q5_1", 32, 24, true},
    [8] = {"q8_0", 32, 34, true},     [9] = {"q8_1", 32, 36, false},
    [10] = {"q2_K", 256, 84, true},  [11] = {"q3_K", 256, 110, true},
    [12] = {"q4_K", 256, 144, true}, [13] = {"q5_K", 256, 176, true},
    [14] = {"q6_K", 256, 210, true}, [15] = {"q8_K", 256, 292, false},
    [16] = {"iq2_xxs", 256, 66, false}, [17] = {"iq2_xs", 256, 74, false},
    [18] = {"iq3_xxs", 256, 98, false}, [19] = {"iq1_s", 256, 50, false},
    [20] = {"iq4_nl", 32, 18, false},   [21] = {"iq3_s", 256, 110, false},
    [22] = {"iq2_s", 256, 82, false},   [23] = {"iq4_xs", 256, 136, false},
    [24] = {"i8", 1, 1, false},       [25] = {"i16", 1, 2, false},
    [26] = {"i32", 1, 4, false},      [27] = {"i64", 1, 8, false},
    [28] = {"f64", 1, 8, false},      [29] = {"iq1_m", 256, 56, false},
    [30] = {"bf16", 1, 2, true},      [34] = {"tq1_0", 256, 54, false},
    [35] = {"tq2_0", 256, 66, false}, [39] = {"mxfp4", 32, 17, false},
};

static const dtype_info *info(uint32_t id)
{
    if (id >= KVS_DTYPE_MAX_ID || DTYPES[id].name == NULL)
        return NULL;
    return &DTYPES[id];
}

bool kvs_dtype_known(uint32_t id) { return info(id) != NULL; }
bool kvs_dtype_computable(uint32_t id) { return info(id) && info(id)->computable; }
const char *kvs_dtype_name(uint32_t id) { return info(id) ? info(id)->name : "unknown"; }
size_t kvs_dtype_block_elems(uint32_t id) { return info(id) ? info(id)->block_elems : 0; }
size_t kvs_dtype_block_bytes(uint32_t id) { return info(id) ? info(id)->block_bytes : 0; }

bool kvs_dtype_parse(const char *name, kvs_dtype *out)
{
    for (uint32_t id = 0; id < KVS_DTYPE_MAX_ID; id++) {
        if (DTYPES[id].name && DTYPES[id].computable && strcasecmp(DTYPES[id].name, name) == 0) {
            *out = (kvs_dtype)id;
            return true;
        }
    }
    return false;
}

bool kvs_dtype_row_bytes(uint32_t id, uint64_t n, uint64_t *out)
{
    const dtype_info *t = info(id);
    if (!t || n % t->block_elems != 0)
        return false;
    uint64_t blocks = n / t->block_elems;
    if (blocks > UINT64_MAX / t->block_bytes)
        return false;
    *out = blocks * t->block_bytes;
    return true;
}

void kvs_dtype_to_f32(kvs_dtype t, const void *src, float *dst, size_t n)
{
    if (kvs_dtype_quant_to_f32(t, src, dst, n))
        return;
    switch (t) {
    case KVS_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case KVS_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = kvs_fp16_to_fp32(s[i]);
        break;
    }
    case KVS_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = kvs_bf16_to_fp32(s[i]);
        break;
    }
    case KVS_DTYPE_Q8_0: {
        const kvs_block_q8_0 *b = src;
        for (size_t i = 0; i < n / KVS_QK8_0; i++) {
            float d = kvs_fp16_to_fp32(b[i].d);
            for (int j = 0; j < KVS_QK8_0; j++)
                dst[i * KVS_QK8_0 + j] = d * b[i].q[j];
        }
        break;
    }
    case KVS_DTYPE_Q4_0: {
        const kvs_block_q4_0 *b = src;
        for (size_t i = 0; i < n / KVS_QK4_0; i++) {
            float d = kvs_fp16_to_fp32(b[i].d);
            for (int j = 0; j < KVS_QK4_0 / 2; j++) {
                dst[i * KVS_QK4_0 + j] = d * ((b[i].qs[j] & 0x0f) - 8);
                dst[i * KVS_QK4_0 + j + 16] = d * ((b[i].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    default:
        break;
    }
}

void kvs_dtype_from_f32(kvs_dtype t, const float *src, void *dst, size_t n)
{
    if (kvs_dtype_quant_from_f32(t, src, dst, n))
        return;
    switch (t) {
    case KVS_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case KVS_DTYPE_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++)
            d[i] = kvs_fp32_to_fp16(src[i]);
        break;
    }
    case KVS_DTYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++)
            d[i] = kvs_fp32_to_bf16(src[i]);
        break;
    }
    case KVS_DTYPE_Q8_0: {
        kvs_block_q8_0 *b = dst;
        for (size_t i = 0; i < n / KVS_QK8_0; i++) {
            const float *x = src + i * KVS_QK8_0;
            float amax = 0.0f;
            for (int j = 0; j < KVS_QK8_0; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            b[i].d = kvs_fp32_to_fp16(d);
            for (int j = 0; j < KVS_QK8_0; j++)
                b[i].q[j] = (int8_t)roundf(x[j] * id);
        }
        break;
    }
    case KVS_DTYPE_Q4_0: {
        /* ggml: d = max / -8 where max is the value of largest magnitude. */
        kvs_block_q4_0 *b = dst;
        for (size_t i = 0; i < n / KVS_QK4_0; i++) {
            const float *x = src + i * KVS_QK4_0;
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < KVS_QK4_0; j++) {
                if (fabsf(x[j]) > amax) {
                    amax = fabsf(x[j]);
                    max = x[j];
                }
            }
            float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
            b[i].d = kvs_fp32_to_fp16(d);
            for (int j = 0; j < KVS_QK4_0 / 2; j++) {
                int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
                q0 = q0 > 15 ? 15 : q0;
                q1 = q1 > 15 ? 15 : q1;
                b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
        break;
    }
    default:
        break;
    }
}
