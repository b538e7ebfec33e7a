/* Speed accounting: byte sizes of weight formats, part names. */
#include "profile.h"

double prof_linear_bytes(const dsv4_linear *W)
{
    double rows = W->rows, cols = W->cols;
    switch (W->fmt) {
    case DSV4_WF_F32: return rows * cols * 4;
    case DSV4_WF_BF16: return rows * cols * 2;
    case DSV4_WF_FP8: return rows * cols + (double)((W->rows + 127) / 128) * ((W->cols + 127) / 128);
    case DSV4_WF_FP4: return rows * cols / 2 + rows * (cols / 32);
    default: return 0;
    }
}

const char *dsv4_prof_part_name(int part)
{
    static const char *const names[DSV4_PROF_COUNT] = {
        [DSV4_PROF_ATTN_WINDOW] = "attn_window", [DSV4_PROF_ATTN_CSA] = "attn_csa",
        [DSV4_PROF_ATTN_HCA] = "attn_hca",       [DSV4_PROF_INDEXER] = "indexer",
        [DSV4_PROF_COMPRESSOR] = "compressor",   [DSV4_PROF_MOE_ROUTED] = "moe_routed",
        [DSV4_PROF_MOE_SHARED] = "moe_shared",   [DSV4_PROF_HC] = "mhc",
        [DSV4_PROF_HEAD] = "head",               [DSV4_PROF_OTHER] = "other",
    };
    return part >= 0 && part < DSV4_PROF_COUNT ? names[part] : "?";
}

void prof_add_rows(prof_counters *p, const prof_counters *rows, int m, double wall)
{
    double busy = 0.0;
    for (int i = 0; i < m; i++) {
        p->s.weight_bytes += rows[i].s.weight_bytes;
        p->s.flops += rows[i].s.flops;
        busy += rows[i].s.seconds;
    }
    if (!p->enabled || busy <= 0.0)
        return;
    for (int i = 0; i < m; i++)
        for (int part = 0; part < DSV4_PROF_COUNT; part++)
            p->s.part_seconds[part] += rows[i].s.part_seconds[part] * (wall / busy);
}
