/*
 * fuzz_hf_config.c - libFuzzer harness for config.json parsing
 * (kvs_hf_config_parse): any bytes either give hyperparameters that pass
 * kvs_model_hparams_check (re-checked here) and a RoPE table that is finite,
 * or an error with a message.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const kvs_arch_info *ai;
    kvs_model_hparams hp;
    kvs_error err;
    char *dtype = NULL;
    if (kvs_hf_config_parse((const char *)data, size, &ai, &hp, &dtype, &err) != KVS_OK) {
        if (!err.msg[0])
            abort();
        return 0;
    }
    if (kvs_model_hparams_check(&hp, &err) != KVS_OK || !ai)
        abort();
    double inv[32768];
    float ms;
    if (hp.rot_dim / 2 <= (int)(sizeof inv / sizeof inv[0])) {
        kvs_model_rope_inv_freq(&hp, inv, &ms);
        if (!isfinite(ms))
            abort();
    }
    for (int32_t l = 0; l < hp.n_layers; l++)
        if (kvs_model_layer_window(&hp, l) < 0)
            abort();
    free(dtype);
    return 0;
}
