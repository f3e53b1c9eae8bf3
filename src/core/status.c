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
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3, olen = strnlen(old, sizeof old - 1);
    if (olen > room)
        olen = room;
    memcpy(err->msg + n + 2, old, olen);
    err->msg[n + 2 + olen] = '\0';
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
