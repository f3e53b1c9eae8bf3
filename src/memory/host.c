#include "memory/host.h"

#include <stdint.h>

#define KVS_HOST_PAGE 4096

void kvs_host_touch(void *p, size_t bytes)
{
    if (!p || bytes == 0)
        return;
    volatile unsigned char *c = p;
    /* The first byte, then the first byte of each following page. */
    size_t first = (KVS_HOST_PAGE - ((uintptr_t)p % KVS_HOST_PAGE)) % KVS_HOST_PAGE;
    c[0] = 0;
    for (size_t i = first; i < bytes; i += KVS_HOST_PAGE)
        c[i] = 0;
}
