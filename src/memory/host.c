#include "memory/host.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* "Key:   1234 kB" in text: the value in bytes. */
static bool status_field(const char *text, const char *key, uint64_t *out)
{
    const char *p = strstr(text, key);
    if (!p)
        return false;
    p += strlen(key);
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p)
        return false;
    *out = (uint64_t)v * 1024;
    return true;
}

bool kvs_host_rss(uint64_t *rss, uint64_t *hwm)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[n] = '\0';
    return status_field(buf, "\nVmRSS:", rss) && status_field(buf, "\nVmHWM:", hwm);
}
