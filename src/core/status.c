#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

kvs_status kvs_fail(kvs_error *err, kvs_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = st;
    }
    return st;
}

kvs_status kvs_fail_wrap(kvs_error *err, const char *fmt, ...)
{
    if (!err)
        return KVS_E_INTERNAL;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return err->status;
}

const char *kvs_status_name(kvs_status st)
{
    switch (st) {
    case KVS_OK: return "ok";
    case KVS_E_INVALID: return "invalid";
    case KVS_E_IO: return "io";
    case KVS_E_FORMAT: return "format";
    case KVS_E_UNSUPPORTED: return "unsupported";
    case KVS_E_NOT_FOUND: return "not_found";
    case KVS_E_NOMEM: return "nomem";
    case KVS_E_BUDGET: return "budget";
    case KVS_E_INTERNAL: return "internal";
    }
    return "unknown";
}
