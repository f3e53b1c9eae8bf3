/*
 * report.h: prints the probe's results twice, as a human-readable table and
 * as one JSON object on one line prefixed "JSON:" (bytes throughout), so that
 * a planner can ingest the numbers without parsing the table.
 */
#ifndef CUDA_PROBE_REPORT_H
#define CUDA_PROBE_REPORT_H

#include "probe.h"

typedef struct {
    const char *variant;          /* label given with --variant */
    const char *binary;           /* "full" (links cuBLAS) or "noblas" */
    char device_name[256];
    int cc_major, cc_minor, sm_count;
    unsigned long long total_mem, l2_bytes;
    char driver_version[96];      /* from NVML, e.g. "580.159.04" */
    int cuda_driver_api, cuda_runtime;
    int cublas_version;
    size_t cublaslt_version;
    const char *module_loading;   /* CUDA_MODULE_LOADING or NULL when unset */
    const char *cublas_ws_config; /* CUBLAS_WORKSPACE_CONFIG or NULL */
    char nvml_note[256];          /* why NVML is unavailable, "" if it worked */
    int gemm_dim;
} probe_info;

/* Print the table to stdout. */
void probe_report_table(const probe_rec *r, const probe_info *in);

/* Print the single "JSON:{...}" line to stdout. */
void probe_report_json(const probe_rec *r, const probe_info *in);

#endif
