// Helpers shared by the x86 kernel files; include inside a `#pragma clang attribute push(target(…f16c…))`
// region so they compile for that instruction set.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/// The f16 block scale at `p`, as f32 (one F16C instruction).
static inline float ck_h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/// Hints the weight bytes [row + ahead, row + ahead + bytes) into cache, one line at a time, clipped to
/// `end`. Weight rows stream from DRAM once per step; the expansion loop is short enough that the
/// out-of-order window alone keeps only a few lines in flight (~4 GB/s measured on this VM), so the
/// rows a few KiB ahead are requested while the current ones are expanded.
static inline void ck_prefetch_ahead(const uint8_t *row, int64_t bytes, int64_t ahead, const uint8_t *end) {
    const uint8_t *from = row + ahead, *to = from + bytes;
    if (to > end) to = end;
    for (const uint8_t *p = from; p < to; p += 64) _mm_prefetch((const char *)p, _MM_HINT_T0);
}

/// How far ahead ck_prefetch_ahead reaches.
#define CK_PREFETCH_BYTES 4096
