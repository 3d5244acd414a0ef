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

/// The sum of a vector's eight lanes, in a fixed order ((0+4)+(2+6)) + ((1+5)+(3+7)).
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// Bytes of 0x10 where a bit of `qh` (four bytes in each 32-bit lane) is set, 0 elsewhere: byte i of the
/// result tests bit i % 8 of the qh byte that `shuffle` puts there (the fifth bit of Q5 values).
static inline __m256i fifth_bits_of(__m256i qh, __m256i shuffle) {
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    const __m256i bytes = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh, shuffle), bit), bit);
    return _mm256_and_si256(bytes, _mm256_set1_epi8(0x10));
}

/// 32 bits → 32 bytes of 0x10 where the bit is set, in order.
static inline __m256i fifth_bits(uint32_t qh) {
    return fifth_bits_of(_mm256_set1_epi32((int)qh),
                         _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
}

/// Q4_K's 6-bit sub-block scale and min `j` (0..7) from its 12 packed bytes.
static inline void k4_scale_min(int j, const uint8_t *q, float *sc, float *m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/// Vectors b..b+V-1 of a batch quantized by ck_quantize_q8 (`stride` bytes apart, `cols` values each): their
/// int8 values, per-block scales and per-block sums.
static inline void ck_q8_vectors(const uint8_t *xq, int64_t stride, int64_t cols, int64_t b, int V, const int8_t *xv[4],
                                 const float *xd[4], const float *xs[4]) {
    for (int v = 0; v < V; v++) {
        xv[v] = (const int8_t *)(xq + (b + v) * stride);
        xd[v] = (const float *)(xq + (b + v) * stride + cols);
        xs[v] = xd[v] + cols / 32;
    }
}

/// e^x for eight values: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor series to r^6 (relative error
/// ~1e-7, about an ulp), times 2^n built in the exponent bits. Inputs below −87 give ~1e-38 instead of
/// 0 (softmax terms that small vanish against the largest, which is 1).
static inline __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // ln 2 in two parts, so n·ln2 is subtracted without losing r's low bits.
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.4286068202862268e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}
