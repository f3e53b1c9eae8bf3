/*
 * cpu_meminfo.c - how much host memory there is, is free, and is ours.
 *
 * Sources: /proc/meminfo (MemTotal, MemAvailable), /proc/self/status
 * (VmRSS), and the memory cgroup the process is in: v2 memory.max /
 * memory.current, or v1 memory.limit_in_bytes / memory.usage_in_bytes.
 * Limits apply hierarchically, so the cgroup directory and each of its
 * parents up to the mount point are read and the tightest limit wins;
 * its group's usage is what counts against it.
 *
 * Every file is read into a bounded buffer and parsed defensively: a
 * missing or malformed cgroup file means "no limit", while unreadable
 * /proc files are an I/O error.
 */
#include "backends/cpu/cpu_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TEXT_CAP 8192

/* Read up to cap - 1 bytes of a file as a NUL-terminated string. */
static bool read_text(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t n = 0;
    while (n < cap - 1) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return n > 0;
}

/* Parse a decimal u64 at s (after optional blanks); end receives the stop. */
static bool parse_u64(const char *s, uint64_t *out, const char **end)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s < '0' || *s > '9')
        return false;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    *end = s;
    return true;
}

bool kvs_cpu_proc_field(const char *text, const char *key, uint64_t *bytes)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, key, klen) != 0 || line[klen] != ':') {
            line = nl ? nl + 1 : NULL;
            continue;
        }
        uint64_t v;
        const char *end;
        if (!parse_u64(line + klen + 1, &v, &end))
            return false;
        while (*end == ' ' || *end == '\t')
            end++;
        if (strncmp(end, "kB", 2) == 0) {
            if (v > UINT64_MAX / 1024)
                return false;
            v *= 1024;
        } else if (*end != '\n' && *end != '\0') {
            return false;
        }
        *bytes = v;
        return true;
    }
    return false;
}

bool kvs_cpu_parse_limit(const char *text, uint64_t *out)
{
    if (strncmp(text, "max", 3) == 0 && (text[3] == '\n' || text[3] == '\0')) {
        *out = UINT64_MAX;
        return true;
    }
    const char *end;
    if (!parse_u64(text, out, &end))
        return false;
    return *end == '\n' || *end == '\0';
}

static bool read_limit(const char *dir, const char *file, uint64_t *out)
{
    char path[4096], buf[128];
    int n = snprintf(path, sizeof path, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= sizeof path)
        return false;
    return read_text(path, buf, sizeof buf) && kvs_cpu_parse_limit(buf, out);
}

/* Walk from mount/path up to mount, keeping the tightest limit. */
static void walk_cgroup(const char *mount, const char *path, const char *limit_file,
                        const char *usage_file, uint64_t *limit, uint64_t *usage)
{
    char dir[4096];
    int n = snprintf(dir, sizeof dir, "%s%s", mount, path);
    if (n < 0 || (size_t)n >= sizeof dir)
        return;
    size_t mlen = strlen(mount);
    for (;;) {
        size_t len = strlen(dir);
        while (len > mlen && dir[len - 1] == '/')
            dir[--len] = '\0';
        uint64_t lim, use;
        if (read_limit(dir, limit_file, &lim) && lim < *limit) {
            *limit = lim;
            *usage = read_limit(dir, usage_file, &use) ? use : UINT64_MAX;
        }
        char *slash = strrchr(dir, '/');
        if (len <= mlen || !slash || (size_t)(slash - dir) < mlen)
            break;
        *slash = '\0';
    }
}

void kvs_cpu_cgroup_memory(uint64_t *limit, uint64_t *usage)
{
    *limit = UINT64_MAX;
    *usage = UINT64_MAX;
    char buf[TEXT_CAP];
    if (!read_text("/proc/self/cgroup", buf, sizeof buf))
        return;
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        /* id:controllers:path */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c1 && c2 && c2[1] == '/') {
            *c2 = '\0';
            const char *ctrls = c1 + 1, *path = c2 + 1;
            if (*ctrls == '\0') {
                walk_cgroup("/sys/fs/cgroup", path, "memory.max", "memory.current", limit, usage);
            } else {
                for (const char *s = ctrls; s;) {
                    if (strncmp(s, "memory", 6) == 0 && (s[6] == ',' || s[6] == '\0')) {
                        walk_cgroup("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes",
                                    "memory.usage_in_bytes", limit, usage);
                        break;
                    }
                    s = strchr(s, ',');
                    s = s ? s + 1 : NULL;
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
}

kvs_status kvs_cpu_mem_info(uint64_t device_memory, kvs_mem_info *out, kvs_error *err)
{
    char buf[TEXT_CAP];
    uint64_t mem_total, mem_avail, rss;
    memset(out, 0, sizeof *out);
    if (!read_text("/proc/self/status", buf, sizeof buf))
        return kvs_fail(err, KVS_E_IO, "cpu: cannot read /proc/self/status");
    if (!kvs_cpu_proc_field(buf, "VmRSS", &rss))
        return kvs_fail(err, KVS_E_IO, "cpu: no VmRSS in /proc/self/status");
    out->process_used = rss;
    if (device_memory) {
        out->total = device_memory;
        out->free = device_memory > rss ? device_memory - rss : 0;
        return KVS_OK;
    }
    if (!read_text("/proc/meminfo", buf, sizeof buf))
        return kvs_fail(err, KVS_E_IO, "cpu: cannot read /proc/meminfo");
    if (!kvs_cpu_proc_field(buf, "MemTotal", &mem_total))
        return kvs_fail(err, KVS_E_IO, "cpu: no MemTotal in /proc/meminfo");
    if (!kvs_cpu_proc_field(buf, "MemAvailable", &mem_avail) &&
        !kvs_cpu_proc_field(buf, "MemFree", &mem_avail))
        return kvs_fail(err, KVS_E_IO, "cpu: no MemAvailable or MemFree in /proc/meminfo");
    uint64_t cg_limit, cg_usage;
    kvs_cpu_cgroup_memory(&cg_limit, &cg_usage);
    out->total = cg_limit < mem_total ? cg_limit : mem_total;
    uint64_t free = mem_avail;
    if (cg_limit < mem_total && cg_usage != UINT64_MAX) {
        uint64_t cg_free = cg_limit > cg_usage ? cg_limit - cg_usage : 0;
        free = cg_free < free ? cg_free : free;
    }
    uint64_t cap = out->total > rss ? out->total - rss : 0;
    out->free = free < cap ? free : cap;
    return KVS_OK;
}
