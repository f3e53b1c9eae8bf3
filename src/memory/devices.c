#include "memory/devices.h"

#include <string.h>
#include <strings.h>

#define MIB 1048576ull

/* H200 and H100 figures: measured 2026-11-27 with tools/cuda_probe (driver
 * 580.159.04, CUDA 13.0, cuBLAS 13.1, lazy module loading).  Others:
 * nvidia-smi capacities less a driver reserve like the measured cards'
 * (480-615 MiB), contexts scaled by SM count; estimates. */
static const kvs_device_profile DEVICES[] = {
    {"h200", "NVIDIA H200 141GB HBM3e", 150109880320ull, 552402944ull, 71303168ull, 2 * MIB, 2 * MIB, 2 * MIB, true},
    {"h100", "NVIDIA H100 80GB HBM3", 85017493504ull, 552402944ull, 71303168ull, 2 * MIB, 2 * MIB, 2 * MIB, true},
    {"a100-80gb", "NVIDIA A100 80GB", (81920ull - 615ull) * MIB, 512 * MIB, 64 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, false},
    {"a100-40gb", "NVIDIA A100 40GB", (40960ull - 615ull) * MIB, 512 * MIB, 64 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, false},
    {"l40s", "NVIDIA L40S 48GB", (46068ull - 615ull) * MIB, 448 * MIB, 64 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, false},
    {"a10g", "NVIDIA A10G 24GB", (23028ull - 615ull) * MIB, 384 * MIB, 64 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, false},
    {"l4", "NVIDIA L4 24GB", (23034ull - 615ull) * MIB, 384 * MIB, 64 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, false},
    {"rtx4090", "NVIDIA GeForce RTX 4090 24GB", (24564ull - 615ull) * MIB, 448 * MIB, 64 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, false},
};

const kvs_device_profile *kvs_device_find(const char *name)
{
    for (size_t i = 0; i < sizeof DEVICES / sizeof DEVICES[0]; i++)
        if (strcasecmp(DEVICES[i].name, name) == 0)
            return &DEVICES[i];
    return NULL;
}

const char *kvs_device_names(void) { return "cpu, cuda (= h100), h100, h200, a100-80gb, a100-40gb, l40s, a10g, l4, rtx4090"; }
