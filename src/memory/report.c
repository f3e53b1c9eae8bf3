#include "memory/report.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define MIB (1024.0 * 1024.0)

void kvs_report_log(const kvs_memory_report *r, FILE *f)
{
    const char *est = r->estimate ? " (estimate)" : "";
    fprintf(f, "INFO kvserve: Model loading took %.4f GiB and %.3f seconds\n", r->weights_bytes / GIB,
            r->load_seconds);
    if (r->startup_seconds > 0)
        fprintf(f, "INFO kvserve: Start-up took %.3f seconds: header and budget %.3f, load %.3f, profile %.3f (%s), "
                   "KV cache %.3f, other %.3f\n",
                r->startup_seconds, r->header_seconds, r->load_seconds, r->profile_seconds,
                r->full_profile ? "full" : "walk", r->kv_alloc_seconds,
                r->startup_seconds - r->header_seconds - r->load_seconds - r->profile_seconds -
                    r->kv_alloc_seconds);
    fprintf(f, "INFO kvserve: Memory budget on %s: total %.2f GiB x gpu_memory_utilization %.4g%s = %.2f GiB"
               " (used by other processes at start: %.2f GiB)\n",
            r->device, r->total_bytes / GIB, r->utilization,
            r->utilization_lowered ? " (the default, lowered to what is free)" : "", r->budget_bytes / GIB,
            r->used_by_others_bytes / GIB);
    fprintf(f, "INFO kvserve: Measured%s: weights %.4f GiB, activation peak %.4f GiB (from shapes %.4f GiB), "
               "graphs %.4f GiB\n",
            est, r->weights_bytes / GIB, r->activation_peak_bytes / GIB, r->activation_formula_bytes / GIB,
            r->graph_bytes / GIB);
    fprintf(f, "INFO kvserve: Reserved: runtime overhead %.2f MiB (computed; %.2f MiB measured%s, %.2f MiB to "
               "spare), plus %.0f bytes per KV block of host bookkeeping; serving reserve %.2f MiB (the HTTP "
               "front end and the serving pools, of which %.2f MiB for %d structured-output slots)\n",
            r->overhead_reserve_bytes / MIB, r->overhead_measured_bytes / MIB,
            r->overhead_estimate ? ", an estimate" : "",
            ((double)r->overhead_reserve_bytes - (double)r->overhead_measured_bytes) / MIB,
            (double)r->overhead_per_block_bytes, r->serving_reserve_bytes / MIB, r->structured_reserve_bytes / MIB,
            r->structured_slots);
    fprintf(f, "INFO kvserve: Available KV cache memory: %.4f GiB\n", r->kv_cache_bytes / GIB);
    fprintf(f, "INFO kvserve: KV cache size: %lld tokens (%d blocks of %d tokens, %.1f KiB per token)\n",
            (long long)r->kv_cache_tokens, r->num_blocks, r->block_size, r->kv_bytes_per_token / 1024.0);
    fprintf(f, "INFO kvserve: Maximum concurrency for %d tokens per request: %.2fx\n", r->max_model_len,
            r->max_concurrency);
    fprintf(f, "INFO kvserve: Slack: %.3f MiB inside the budget (under one block: %.3f MiB), %.2f GiB outside "
               "it; projected peak process memory %.4f GiB (%.2f MiB), observed so far %.2f MiB\n",
            r->slack_inside_bytes / MIB, r->kv_bytes_per_token * (double)r->block_size / MIB,
            r->slack_outside_bytes / GIB, r->projected_peak_bytes / GIB, r->projected_peak_bytes / MIB,
            r->peak_process_bytes / MIB);
}

void kvs_report_table(const kvs_memory_report *r, FILE *f)
{
    fprintf(f, "device                 %s%s\n", r->device, r->estimate ? "  (prediction)" : "");
    fprintf(f, "total                  %10.3f GiB\n", r->total_bytes / GIB);
    fprintf(f, "utilization            %10.4g%s\n", r->utilization,
            r->utilization_lowered ? "  (the default 0.92, lowered to what is free now)" : "");
    fprintf(f, "budget                 %10.3f GiB\n", r->budget_bytes / GIB);
    fprintf(f, "used by others         %10.3f GiB\n", r->used_by_others_bytes / GIB);
    fprintf(f, "  weights              %10.3f GiB\n", r->weights_bytes / GIB);
    fprintf(f, "  activation peak      %10.3f GiB\n", r->activation_peak_bytes / GIB);
    fprintf(f, "  graphs               %10.3f GiB\n", r->graph_bytes / GIB);
    fprintf(f, "  runtime overhead     %10.3f GiB  (reserve %.2f MiB + %d blocks x %llu bytes; measured %.2f MiB%s)\n",
            r->overhead_bytes / GIB, r->overhead_reserve_bytes / MIB, r->num_blocks,
            (unsigned long long)r->overhead_per_block_bytes, r->overhead_measured_bytes / MIB,
            r->overhead_estimate ? ", an estimate" : "");
    fprintf(f, "  serving reserve      %10.3f GiB  (%.2f MiB; structured output %d slots %.2f MiB)\n",
            r->serving_reserve_bytes / GIB, r->serving_reserve_bytes / MIB, r->structured_slots,
            r->structured_reserve_bytes / MIB);
    fprintf(f, "  KV cache             %10.3f GiB\n", r->kv_cache_bytes / GIB);
    fprintf(f, "  slack inside budget  %10.3f MiB\n", r->slack_inside_bytes / MIB);
    fprintf(f, "block size             %10d tokens\n", r->block_size);
    fprintf(f, "KV bytes per token     %10llu\n", (unsigned long long)r->kv_bytes_per_token);
    fprintf(f, "KV blocks              %10d\n", r->num_blocks);
    fprintf(f, "KV cache tokens        %10lld\n", (long long)r->kv_cache_tokens);
    fprintf(f, "max model len          %10d tokens\n", r->max_model_len);
    fprintf(f, "max concurrency        %10.2f requests of max_model_len\n", r->max_concurrency);
    fprintf(f, "projected peak memory  %10.3f GiB\n", r->projected_peak_bytes / GIB);
}

json_t *kvs_report_json_obj(const kvs_memory_report *r)
{
    json_t *o = json_pack(
        "{s:s, s:b, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:i, s:I, s:i, s:I, s:i, s:f, s:I, "
        "s:I, s:I, s:I, s:I, s:b}",
        "device", r->device, "estimate", r->estimate, "total_bytes", (json_int_t)r->total_bytes,
        "utilization", r->utilization, "budget_bytes", (json_int_t)r->budget_bytes,
        "used_by_others_bytes", (json_int_t)r->used_by_others_bytes, "weights_bytes",
        (json_int_t)r->weights_bytes, "activation_peak_bytes", (json_int_t)r->activation_peak_bytes,
        "graph_bytes", (json_int_t)r->graph_bytes, "overhead_bytes", (json_int_t)r->overhead_bytes,
        "overhead_estimate", r->overhead_estimate, "kv_cache_bytes", (json_int_t)r->kv_cache_bytes,
        "block_size", r->block_size, "kv_bytes_per_token", (json_int_t)r->kv_bytes_per_token, "num_blocks",
        r->num_blocks, "kv_cache_tokens", (json_int_t)r->kv_cache_tokens, "max_model_len", r->max_model_len,
        "max_concurrency", r->max_concurrency, "peak_process_bytes", (json_int_t)r->peak_process_bytes,
        "activation_formula_bytes", (json_int_t)r->activation_formula_bytes, "slack_inside_bytes",
        (json_int_t)r->slack_inside_bytes, "slack_outside_bytes", (json_int_t)r->slack_outside_bytes,
        "overhead_per_block_bytes", (json_int_t)r->overhead_per_block_bytes, "utilization_lowered",
        r->utilization_lowered);
    if (!o)
        return NULL;
    json_object_set_new(o, "overhead_reserve_bytes", json_integer((json_int_t)r->overhead_reserve_bytes));
    json_object_set_new(o, "overhead_measured_bytes", json_integer((json_int_t)r->overhead_measured_bytes));
    json_object_set_new(o, "serving_reserve_bytes", json_integer((json_int_t)r->serving_reserve_bytes));
    json_object_set_new(o, "structured_reserve_bytes", json_integer((json_int_t)r->structured_reserve_bytes));
    json_object_set_new(o, "structured_slots", json_integer(r->structured_slots));
    json_object_set_new(o, "projected_peak_bytes", json_integer((json_int_t)r->projected_peak_bytes));
    return o;
}

char *kvs_report_json(const kvs_memory_report *r)
{
    json_t *o = kvs_report_json_obj(r);
    if (!o)
        return NULL;
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

kvs_status kvs_report_write_json(const kvs_memory_report *r, const char *path, kvs_error *err)
{
    char *s = kvs_report_json(r);
    if (!s)
        return kvs_fail(err, KVS_E_NOMEM, "cannot render the memory report");
    FILE *f = fopen(path, "w");
    if (!f) {
        free(s);
        return kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
    }
    fprintf(f, "%s\n", s);
    free(s);
    if (fclose(f) != 0)
        return kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
    return KVS_OK;
}

/* A size in the unit that suits the device: GiB from 2 GiB of total, MiB
 * from 2 MiB, else KiB. */
typedef struct svg_unit {
    double div;
    const char *name;
} svg_unit;

static svg_unit unit_for(uint64_t total)
{
    if (total >= 2 * (uint64_t)GIB)
        return (svg_unit){GIB, "GiB"};
    if (total >= 2 * (uint64_t)MIB)
        return (svg_unit){MIB, "MiB"};
    return (svg_unit){1024.0, "KiB"};
}

static void svg_size(char *buf, size_t cap, uint64_t bytes, svg_unit u)
{
    double v = bytes / u.div;
    snprintf(buf, cap, v >= 100 ? "%.1f %s" : v >= 10 ? "%.2f %s" : "%.3f %s", v, u.name);
}

/* Escape <, > and & of a device name. */
static void svg_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

/* Width of text in the 12 px sans-serif font, generously (no clipping). */
static double text_w(size_t chars) { return 7.2 * (double)chars + 8.0; }

kvs_status kvs_report_write_svg(const kvs_memory_report *r, const char *path, kvs_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
    const svg_unit u = unit_for(r->total_bytes);
    const bool planned = r->estimate || r->overhead_estimate;
    const double W = 900.0, x0 = 20.0, y0 = 84.0, h = 56.0;
    double total = r->total_bytes ? (double)r->total_bytes : 1.0;
    struct { const char *name; uint64_t bytes; const char *color; const char *note; } parts[] = {
        {"weights", r->weights_bytes, "#4e79a7", r->estimate ? "from the header" : "measured"},
        {"activation peak", r->activation_peak_bytes, "#f28e2b", r->estimate ? "formula" : "profiled"},
        {"graphs", r->graph_bytes, "#e15759", r->estimate ? "estimate" : "measured"},
        {"runtime overhead (reserve)", r->overhead_bytes, "#76b7b2", NULL},
        {"serving reserve", r->serving_reserve_bytes, "#b07aa1", "front end and serving pools"},
        {"KV cache", r->kv_cache_bytes, "#59a14f", NULL},
        {"slack inside the budget", r->slack_inside_bytes, "#edc948", NULL},
        {"used by other processes", r->used_by_others_bytes, "#bab0ac", NULL},
    };
    const int n_parts = (int)(sizeof parts / sizeof parts[0]);
    char notes[3][160];
    snprintf(notes[0], sizeof notes[0], "computed; %s measured%s", "", "");
    {
        char a[48], b[48];
        svg_size(a, sizeof a, r->overhead_reserve_bytes, u);
        svg_size(b, sizeof b, r->overhead_measured_bytes, u);
        snprintf(notes[0], sizeof notes[0], "reserve %s (%s %s) + %d blocks x %llu B", a,
                 r->overhead_estimate ? "start-up will measure about" : "measured", b, r->num_blocks,
                 (unsigned long long)r->overhead_per_block_bytes);
    }
    snprintf(notes[1], sizeof notes[1], "%lld tokens, %d blocks of %d", (long long)r->kv_cache_tokens, r->num_blocks,
             r->block_size);
    parts[3].note = notes[0];
    {
        char a[48];
        svg_size(a, sizeof a, r->structured_reserve_bytes, u);
        snprintf(notes[2], sizeof notes[2], "front end and serving pools; %s for %d structured-output slots", a,
                 r->structured_slots);
        parts[4].note = notes[2];
    }
    parts[5].note = notes[1];

    /* Legend lines, each long enough for its text. */
    double legend_w = 0;
    char legend[8][320];
    for (int i = 0; i < n_parts; i++) {
        char size[48];
        svg_size(size, sizeof size, parts[i].bytes, u);
        snprintf(legend[i], sizeof legend[i], "%s: %s%s%s%s", parts[i].name, size, parts[i].note ? " (" : "",
                 parts[i].note ? parts[i].note : "", parts[i].note ? ")" : "");
        double w = text_w(strlen(legend[i])) + 16;
        if (w > legend_w)
            legend_w = w;
    }
    /* Small terms get a leader line to a label above the bar, staggered. */
    double height = y0 + h + 40.0 + 18.0 * n_parts + 30.0;
    double width = W + 40 > legend_w + 40 ? W + 40 : legend_w + 40;
    double title_w = x0 + 9.0 * (double)(strlen(r->device) + 125); /* the 15 px title */
    if (title_w > width)
        width = title_w;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", width, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    char bs[48], ts[48];
    svg_size(bs, sizeof bs, r->budget_bytes, u);
    svg_size(ts, sizeof ts, r->total_bytes, u);
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">kvserve memory on ", x0);
    svg_text(f, r->device);
    fprintf(f, "%s: budget %s of %s (utilization %.4g)</text>\n",
            planned ? " — PLAN (estimate: predicted, not measured)" : " — measured at start-up", bs, ts,
            r->utilization);
    fprintf(f, "<text x=\"%.0f\" y=\"40\" fill=\"#555\">KV cache: %lld tokens in %d blocks of %d; max concurrency "
               "%.2f at %d tokens per request</text>\n", x0, (long long)r->kv_cache_tokens, r->num_blocks,
            r->block_size, r->max_concurrency, r->max_model_len);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#f4f4f4\" stroke=\"#333\"/>\n",
            x0, y0, W, h);
    double x = x0;
    int n_small = 0;
    double last_label_end = -1e9;
    for (int i = 0; i < n_parts; i++) {
        char size[48];
        svg_size(size, sizeof size, parts[i].bytes, u);
        double w = W * (double)parts[i].bytes / total;
        double px = i == n_parts - 1 ? x0 + W - w : x; /* others' memory at the far end */
        if (parts[i].bytes > 0) {
            fprintf(f, "<rect x=\"%.2f\" y=\"%.0f\" width=\"%.2f\" height=\"%.0f\" fill=\"%s\"%s><title>%s %s"
                       "</title></rect>\n", px, y0, w < 0.5 ? 0.5 : w, h, parts[i].color,
                    planned ? " fill-opacity=\"0.8\"" : "", parts[i].name, size);
            char label[96];
            snprintf(label, sizeof label, "%s %s", parts[i].name, size);
            double lw = text_w(strlen(label));
            if (w >= lw) {
                fprintf(f, "<text x=\"%.2f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#fff\" font-weight=\"bold\">"
                           "%s</text>\n", px + w / 2, y0 + h / 2 + 4, label);
            } else { /* a leader line up to a label, staggered so that labels do not overlap */
                double cx = px + w / 2;
                double ly = y0 - 8 - 14.0 * (n_small % 2);
                double lx = cx < last_label_end + 6 ? last_label_end + 6 : cx;
                if (lx + lw > width - 4)
                    lx = width - 4 - lw;
                fprintf(f, "<polyline points=\"%.2f,%.0f %.2f,%.0f %.2f,%.0f\" fill=\"none\" stroke=\"#333\" "
                           "stroke-width=\"0.8\"/>\n", cx, y0, cx, ly + 3, lx, ly + 3);
                fprintf(f, "<text x=\"%.2f\" y=\"%.0f\" font-size=\"11\">%s</text>\n", lx + 2, ly, label);
                last_label_end = lx + lw;
                n_small++;
            }
        }
        double ly = y0 + h + 40.0 + 18.0 * i;
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" height=\"10\" fill=\"%s\"/>"
                   "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                x0, ly - 9, parts[i].color, x0 + 16, ly, legend[i]);
        if (i < n_parts - 1)
            x += w;
    }
    double bx = x0 + W * (double)r->budget_bytes / total;
    fprintf(f, "<line x1=\"%.2f\" y1=\"%.0f\" x2=\"%.2f\" y2=\"%.0f\" stroke=\"#000\" stroke-width=\"2\" "
               "stroke-dasharray=\"4,3\"/><text x=\"%.2f\" y=\"%.0f\" text-anchor=\"end\">budget %s</text>\n",
            bx, y0 - 4, bx, y0 + h + 8, bx - 4 > text_w(7 + strlen(bs)) ? bx - 4 : text_w(7 + strlen(bs)),
            y0 + h + 22, bs);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">total %s</text>\n", x0 + W, y0 + h + 22, ts);
    char pk[48], pj[48];
    svg_size(pk, sizeof pk, r->peak_process_bytes, u);
    svg_size(pj, sizeof pj, r->projected_peak_bytes, u);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"#555\">projected peak %s%s%s%s</text>\n", x0, height - 10, pj,
            planned ? "" : "; observed peak (VmHWM) ", planned ? "" : pk, planned ? " (a plan: nothing observed)" : "");
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0)
        return kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
    return KVS_OK;
}
