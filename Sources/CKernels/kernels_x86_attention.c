// AVX2/FMA attention over a KV cache: one query against its span (decode), and a prefill's block of
// consecutive queries against the keys they share. Checked against the portable kernel in the tests.
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "kernels_x86.h"

/// Eight values (from `i`) of cache row `t` as f32: loaded (f32), widened (bf16), or times the row's scale
/// (int8) — the same values the portable kernel's kv_row gives.
static inline __attribute__((always_inline)) __m256 kv8(const int kv_type, const void *base, const float *scales, int64_t t,
                                                        int64_t stride, int64_t i) {
    switch (kv_type) {
    case CK_KV_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + t * stride + i))), 16));
    case CK_KV_I8:
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)base + t * stride + i)))),
                             _mm256_set1_ps(scales[t]));
    default: return _mm256_loadu_ps((const float *)base + t * stride + i);
    }
}

/// ck_attention for head_dim a multiple of 8: scores four keys at a time (four independent FMA chains
/// instead of one latency-bound chain), then the weighted values summed in registers, 64 dimensions at a
/// time, instead of a load-add-store of the output per key.
static inline __attribute__((always_inline)) void attention8(const int kv_type, const float *q, const void *keys, const float *key_scales,
                                                            const void *values, const float *value_scales, int64_t stride, int64_t span,
                                                            int64_t hd, float scale, float softcap, float *scores, float *out,
                                                            float *stats) {
    int64_t t = 0;
    for (; t + 4 <= span; t += 4) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t i = 0; i < hd; i += 8) {
            const __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(kv8(kv_type, keys, key_scales, t, stride, i), qv, a0);
            a1 = _mm256_fmadd_ps(kv8(kv_type, keys, key_scales, t + 1, stride, i), qv, a1);
            a2 = _mm256_fmadd_ps(kv8(kv_type, keys, key_scales, t + 2, stride, i), qv, a2);
            a3 = _mm256_fmadd_ps(kv8(kv_type, keys, key_scales, t + 3, stride, i), qv, a3);
        }
        scores[t] = hsum(a0) * scale, scores[t + 1] = hsum(a1) * scale, scores[t + 2] = hsum(a2) * scale, scores[t + 3] = hsum(a3) * scale;
    }
    for (; t < span; t++) {
        __m256 a = _mm256_setzero_ps();
        for (int64_t i = 0; i < hd; i += 8) a = _mm256_fmadd_ps(kv8(kv_type, keys, key_scales, t, stride, i), _mm256_loadu_ps(q + i), a);
        scores[t] = hsum(a) * scale;
    }
    float max = -__builtin_inff();
    for (t = 0; t < span; t++) {
        if (softcap > 0) scores[t] = softcap * tanhf(scores[t] / softcap);
        if (scores[t] > max) max = scores[t];
    }
    const __m256 top = _mm256_set1_ps(max);
    __m256 total = _mm256_setzero_ps();
    for (t = 0; t + 8 <= span; t += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + t), top));
        _mm256_storeu_ps(scores + t, e);
        total = _mm256_add_ps(total, e);
    }
    float sum = hsum(total);
    for (; t < span; t++) {
        scores[t] = expf(scores[t] - max);
        sum += scores[t];
    }
    for (t = 0; t < span; t++) scores[t] /= sum;
    if (stats) stats[0] = max, stats[1] = sum;
    int64_t i = 0;
    for (; i + 64 <= hd; i += 64) {
        __m256 acc[8];
        for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
        for (t = 0; t < span; t++) {
            const __m256 p = _mm256_broadcast_ss(scores + t);
            for (int k = 0; k < 8; k++) acc[k] = _mm256_fmadd_ps(p, kv8(kv_type, values, value_scales, t, stride, i + 8 * k), acc[k]);
        }
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(out + i + 8 * k, acc[k]);
    }
    for (; i < hd; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (t = 0; t < span; t++) acc = _mm256_fmadd_ps(_mm256_broadcast_ss(scores + t), kv8(kv_type, values, value_scales, t, stride, i), acc);
        _mm256_storeu_ps(out + i, acc);
    }
}

int ck_attention_simd_avx2(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                           const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                           float *scores, float *out, float *stats) {
    if (head_dim % 8 != 0) return -1;
    switch (kv_type) {
    case CK_KV_BF16: attention8(CK_KV_BF16, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out, stats); break;
    case CK_KV_I8: attention8(CK_KV_I8, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out, stats); break;
    default: attention8(CK_KV_F32, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out, stats); break;
    }
    return 0;
}

/// Keys t0..t0+7 (rows past `end` as zeros), dimensions transposed: kt[8d + k] is key t0 + k's value d.
static inline __attribute__((always_inline)) void transpose_keys(const int kv_type, const void *keys, const float *key_scales, int64_t stride,
                                                                int64_t t0, int64_t end, int64_t hd, float *kt) {
    for (int64_t i = 0; i < hd; i += 8) {
        __m256 r[8];
        for (int k = 0; k < 8; k++) r[k] = t0 + k < end ? kv8(kv_type, keys, key_scales, t0 + k, stride, i) : _mm256_setzero_ps();
        // 8×8 transpose: pairs, then quads, then the 128-bit halves.
        const __m256 a0 = _mm256_unpacklo_ps(r[0], r[1]), a1 = _mm256_unpackhi_ps(r[0], r[1]), a2 = _mm256_unpacklo_ps(r[2], r[3]),
                     a3 = _mm256_unpackhi_ps(r[2], r[3]), a4 = _mm256_unpacklo_ps(r[4], r[5]), a5 = _mm256_unpackhi_ps(r[4], r[5]),
                     a6 = _mm256_unpacklo_ps(r[6], r[7]), a7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE), b2 = _mm256_shuffle_ps(a1, a3, 0x44),
                     b3 = _mm256_shuffle_ps(a1, a3, 0xEE), b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE),
                     b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
        _mm256_storeu_ps(kt + 8 * (i + 0), _mm256_permute2f128_ps(b0, b4, 0x20));
        _mm256_storeu_ps(kt + 8 * (i + 1), _mm256_permute2f128_ps(b1, b5, 0x20));
        _mm256_storeu_ps(kt + 8 * (i + 2), _mm256_permute2f128_ps(b2, b6, 0x20));
        _mm256_storeu_ps(kt + 8 * (i + 3), _mm256_permute2f128_ps(b3, b7, 0x20));
        _mm256_storeu_ps(kt + 8 * (i + 4), _mm256_permute2f128_ps(b0, b4, 0x31));
        _mm256_storeu_ps(kt + 8 * (i + 5), _mm256_permute2f128_ps(b1, b5, 0x31));
        _mm256_storeu_ps(kt + 8 * (i + 6), _mm256_permute2f128_ps(b2, b6, 0x31));
        _mm256_storeu_ps(kt + 8 * (i + 7), _mm256_permute2f128_ps(b3, b7, 0x31));
    }
}

/// Scores of queries q[0..Q) (`q_stride` apart) against two transposed key tiles (16 keys): each
/// dimension's two tile loads serve Q queries' broadcasts, eight FMAs for six loads at Q = 4. Lane k of a
/// score is one key's dot product summed over d in order, whatever else the block holds.
static inline __attribute__((always_inline)) void score_tiles(const int Q, const float *q, int64_t q_stride, const float *kt, int64_t hd,
                                                             __m256 scale, float *s, int64_t s_stride) {
    __m256 a[4][2];
    for (int j = 0; j < Q; j++) a[j][0] = a[j][1] = _mm256_setzero_ps();
    for (int64_t d = 0; d < hd; d++) {
        const __m256 k0 = _mm256_loadu_ps(kt + 8 * d), k1 = _mm256_loadu_ps(kt + 8 * (hd + d));
        for (int j = 0; j < Q; j++) {
            const __m256 qd = _mm256_broadcast_ss(q + j * q_stride + d);
            a[j][0] = _mm256_fmadd_ps(qd, k0, a[j][0]);
            a[j][1] = _mm256_fmadd_ps(qd, k1, a[j][1]);
        }
    }
    for (int j = 0; j < Q; j++) {
        _mm256_storeu_ps(s + j * s_stride, _mm256_mul_ps(a[j][0], scale));
        _mm256_storeu_ps(s + j * s_stride + 8, _mm256_mul_ps(a[j][1], scale));
    }
}

/// out_j[i..i+16) = Σ_t p_j[t]·v_t[i..i+16) for Q queries' probability rows (`p_stride` apart) over
/// positions [lo, hi): two value loads serve Q broadcasts per position.
static inline __attribute__((always_inline)) void weigh_values(const int kv_type, const int Q, const float *p, int64_t p_stride,
                                                              const void *values, const float *value_scales, int64_t stride, int64_t lo,
                                                              int64_t hi, int64_t i, float *out, int64_t out_stride) {
    __m256 a[4][2];
    for (int j = 0; j < Q; j++) a[j][0] = a[j][1] = _mm256_setzero_ps();
    for (int64_t t = lo; t < hi; t++) {
        const __m256 v0 = kv8(kv_type, values, value_scales, t, stride, i), v1 = kv8(kv_type, values, value_scales, t, stride, i + 8);
        for (int j = 0; j < Q; j++) {
            const __m256 pj = _mm256_broadcast_ss(p + j * p_stride + (t - lo));
            a[j][0] = _mm256_fmadd_ps(pj, v0, a[j][0]);
            a[j][1] = _mm256_fmadd_ps(pj, v1, a[j][1]);
        }
    }
    for (int j = 0; j < Q; j++) {
        _mm256_storeu_ps(out + j * out_stride + i, a[j][0]);
        _mm256_storeu_ps(out + j * out_stride + i + 8, a[j][1]);
    }
}

/// One score row (positions lo.. in lanes aligned to multiples of eight) turned into probabilities over
/// [start, end), zeros elsewhere: soft-capped, max-subtracted, exponentiated, normalized.
static void softmax_row(float *s, int64_t lo, int64_t width, int64_t start, int64_t end, float softcap) {
    if (softcap > 0)
        for (int64_t t = start; t < end; t++) s[t - lo] = softcap * tanhf(s[t - lo] / softcap);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i first = _mm256_set1_epi32((int)(start - lo) - 1), last = _mm256_set1_epi32((int)(end - lo));
    __m256 top = _mm256_set1_ps(-__builtin_inff());
    for (int64_t t = 0; t < width; t += 8) {
        const __m256i at = _mm256_add_epi32(_mm256_set1_epi32((int)t), lane);
        const __m256 valid = _mm256_castsi256_ps(_mm256_and_si256(_mm256_cmpgt_epi32(at, first), _mm256_cmpgt_epi32(last, at)));
        top = _mm256_max_ps(top, _mm256_blendv_ps(_mm256_set1_ps(-__builtin_inff()), _mm256_loadu_ps(s + t), valid));
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    top = _mm256_set1_ps(_mm_cvtss_f32(m));
    __m256 total = _mm256_setzero_ps();
    for (int64_t t = 0; t < width; t += 8) {
        const __m256i at = _mm256_add_epi32(_mm256_set1_epi32((int)t), lane);
        const __m256 valid = _mm256_castsi256_ps(_mm256_and_si256(_mm256_cmpgt_epi32(at, first), _mm256_cmpgt_epi32(last, at)));
        const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(s + t), top)), valid);
        _mm256_storeu_ps(s + t, e);
        total = _mm256_add_ps(total, e);
    }
    const __m256 sum = _mm256_set1_ps(hsum(total));
    for (int64_t t = 0; t < width; t += 8) _mm256_storeu_ps(s + t, _mm256_div_ps(_mm256_loadu_ps(s + t), sum));
}

static inline __attribute__((always_inline)) void causal8(const int kv_type, const float *q, int64_t q_stride, int64_t nq, int64_t pos0,
                                                         int64_t window, const void *keys, const float *key_scales, const void *values,
                                                         const float *value_scales, int64_t stride, int64_t hd, float scale, float softcap,
                                                         float *scratch, float *out, int64_t out_stride) {
    const int64_t end = pos0 + nq;
    const int64_t lo = (window > 0 && pos0 + 1 > window ? pos0 + 1 - window : 0) & ~(int64_t)15;
    const int64_t width = (end - lo + 15) & ~(int64_t)15;
    float *s = scratch, *kt = scratch + nq * width;
    const __m256 vscale = _mm256_set1_ps(scale);
    // Scores, sixteen keys at a time: each pair of tiles is transposed once for all the block's queries.
    for (int64_t t0 = lo; t0 < end; t0 += 16) {
        transpose_keys(kv_type, keys, key_scales, stride, t0, end, hd, kt);
        transpose_keys(kv_type, keys, key_scales, stride, t0 + 8, end, hd, kt + 8 * hd);
        int64_t j = 0;
        for (; j + 4 <= nq; j += 4) score_tiles(4, q + j * q_stride, q_stride, kt, hd, vscale, s + j * width + (t0 - lo), width);
        switch (nq - j) {
        case 3: score_tiles(3, q + j * q_stride, q_stride, kt, hd, vscale, s + j * width + (t0 - lo), width); break;
        case 2: score_tiles(2, q + j * q_stride, q_stride, kt, hd, vscale, s + j * width + (t0 - lo), width); break;
        case 1: score_tiles(1, q + j * q_stride, q_stride, kt, hd, vscale, s + j * width + (t0 - lo), width); break;
        default: break;
        }
    }
    for (int64_t j = 0; j < nq; j++) {
        const int64_t p = pos0 + j, start = window > 0 && p + 1 > window ? p + 1 - window : 0;
        softmax_row(s + j * width, lo, width, start, p + 1, softcap);
    }
    // Positions past the block's last query hold zero probabilities for every query; stop before them.
    for (int64_t i = 0; i < hd; i += 16) {
        int64_t j = 0;
        for (; j + 4 <= nq; j += 4) weigh_values(kv_type, 4, s + j * width, width, values, value_scales, stride, lo, end, i, out + j * out_stride, out_stride);
        switch (nq - j) {
        case 3: weigh_values(kv_type, 3, s + j * width, width, values, value_scales, stride, lo, end, i, out + j * out_stride, out_stride); break;
        case 2: weigh_values(kv_type, 2, s + j * width, width, values, value_scales, stride, lo, end, i, out + j * out_stride, out_stride); break;
        case 1: weigh_values(kv_type, 1, s + j * width, width, values, value_scales, stride, lo, end, i, out + j * out_stride, out_stride); break;
        default: break;
        }
    }
}

int ck_attention_causal_avx2(int kv_type, const float *q, int64_t q_stride, int64_t nq, int64_t pos0, int64_t window, const void *keys,
                             const float *key_scales, const void *values, const float *value_scales, int64_t stride, int64_t head_dim,
                             float scale, float softcap, float *scratch, float *out, int64_t out_stride) {
    if (head_dim % 16 != 0) return -1;
    switch (kv_type) {
    case CK_KV_BF16:
        causal8(CK_KV_BF16, q, q_stride, nq, pos0, window, keys, key_scales, values, value_scales, stride, head_dim, scale, softcap, scratch, out,
                out_stride);
        break;
    case CK_KV_I8:
        causal8(CK_KV_I8, q, q_stride, nq, pos0, window, keys, key_scales, values, value_scales, stride, head_dim, scale, softcap, scratch, out,
                out_stride);
        break;
    default:
        causal8(CK_KV_F32, q, q_stride, nq, pos0, window, keys, key_scales, values, value_scales, stride, head_dim, scale, softcap, scratch, out,
                out_stride);
        break;
    }
    return 0;
}

#pragma clang attribute pop
#endif
