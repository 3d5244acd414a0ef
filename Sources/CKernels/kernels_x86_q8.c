// AVX2 integer products against int8-quantized activations (see kernels_q8.c for the arithmetic). Per block of
// 32: the weight bytes come out of the block in registers (never stored), VPMADDUBSW + VPMADDWD sum four
// products per 32-bit lane exactly, and one FMA scales the lanes. Every (row, vector) pair has the same
// instruction sequence for any batch, so a sequence's logits are bit-identical alone or among others.
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "kernels_x86.h"

void ck_quantize_q8_avx2(const float *x, int64_t cols, void *out) {
    int8_t *q = (int8_t *)out;
    float *d = (float *)((uint8_t *)out + cols), *s = d + cols / 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t g = 0; g < cols / 32; g++) {
        const float *xb = x + 32 * g;
        __m256 v[4], top = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(xb + 8 * k), top = _mm256_max_ps(top, _mm256_andnot_ps(sign, v[k]));
        __m128 t = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
        t = _mm_max_ps(t, _mm_movehl_ps(t, t));
        t = _mm_max_ss(t, _mm_movehdup_ps(t));
        const float amax = _mm_cvtss_f32(t);
        const __m256 inv = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
        __m256i i[4];
        for (int k = 0; k < 4; k++)
            i[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        // Pack 32 int32 → 32 int8 in element order (the packs interleave 128-bit lanes; the permute undoes it).
        const __m256i w = _mm256_packs_epi32(i[0], i[1]), z = _mm256_packs_epi32(i[2], i[3]);
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w, z), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + 32 * g), b);
        const __m256i sum32 = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(sum32), _mm256_extracti128_si256(sum32, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
        d[g] = amax / 127.0f;
        s[g] = d[g] * (float)_mm_cvtsi128_si32(h);
    }
}

// Weight block g of a row in registers: q (32 bytes, signed or, for the types with a minimum, unsigned),
// the scale of each 32-bit lane's four values (sv), and the additive minimum m.
typedef void (*q8_group_fn)(const uint8_t *row, int64_t g, __m256i *q, __m256 *sv, float *m);

/// 32 nibbles of `qs` in element order: low nibbles are values 0..15, high nibbles 16..31.
static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs), mask = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
}

static inline void q8_q4_0(const uint8_t *row, int64_t g, __m256i *q, __m256 *sv, float *m) {
    const uint8_t *w = row + g * 18;
    *q = _mm256_sub_epi8(nibbles32(w + 2), _mm256_set1_epi8(8));
    *sv = _mm256_set1_ps(ck_h2f(w));
    *m = 0;
}

static inline void q8_q4_1(const uint8_t *row, int64_t g, __m256i *q, __m256 *sv, float *m) {
    const uint8_t *w = row + g * 20;
    *q = nibbles32(w + 4);
    *sv = _mm256_set1_ps(ck_h2f(w));
    *m = ck_h2f(w + 2);
}

static inline void q8_q5_0(const uint8_t *row, int64_t g, __m256i *q, __m256 *sv, float *m) {
    const uint8_t *w = row + g * 22;
    uint32_t qh;
    memcpy(&qh, w + 2, 4);
    *q = _mm256_sub_epi8(_mm256_or_si256(nibbles32(w + 6), fifth_bits(qh)), _mm256_set1_epi8(16));
    *sv = _mm256_set1_ps(ck_h2f(w));
    *m = 0;
}

static inline void q8_q8_0(const uint8_t *row, int64_t g, __m256i *q, __m256 *sv, float *m) {
    const uint8_t *w = row + g * 34;
    *q = _mm256_loadu_si256((const __m256i *)(w + 2));
    *sv = _mm256_set1_ps(ck_h2f(w));
    *m = 0;
}

static inline void q8_q4_K(const uint8_t *row, int64_t g, __m256i *q, __m256 *sv, float *m) {
    const uint8_t *w = row + (g / 8) * 144;
    const int j = (int)(g % 8);
    float scale, min;
    k4_scale_min(j, w + 4, &scale, &min);
    const __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * (j / 2)));
    *q = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(bytes, 4) : bytes, _mm256_set1_epi8(0x0F));
    *sv = _mm256_set1_ps(ck_h2f(w) * scale);
    *m = -(ck_h2f(w + 2) * min);
}

static inline void q8_q6_K(const uint8_t *row, int64_t g, __m256i *q, __m256 *sv, float *m) {
    const uint8_t *w = row + (g / 8) * 210;
    const int half = (int)(g % 8) / 4, j = (int)(g % 4);
    const int8_t *sc = (const int8_t *)(w + 192) + 8 * half;
    const __m256i l = _mm256_loadu_si256((const __m256i *)(w + 64 * half + 32 * (j & 1)));
    const __m256i h = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * half));
    const __m256i lo = _mm256_and_si256(j < 2 ? l : _mm256_srli_epi16(l, 4), _mm256_set1_epi8(0x0F));
    const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * j), _mm256_set1_epi8(3)), 4);
    *q = _mm256_sub_epi8(_mm256_or_si256(lo, hi), _mm256_set1_epi8(32));
    // Lanes 0..3 hold values 0..15 (scale 2j), lanes 4..7 values 16..31 (scale 2j+1).
    const float d = ck_h2f(w + 208);
    *sv = _mm256_set_m128(_mm_set1_ps(d * (float)sc[2 * j + 1]), _mm_set1_ps(d * (float)sc[2 * j]));
    *m = 0;
}

/// The types: X(type, group function, values signed?, has a minimum?).
#define CK_Q8_TYPES(X)                                                                                                    \
    X(CK_Q4_0, q8_q4_0, 1, 0) X(CK_Q4_1, q8_q4_1, 0, 1) X(CK_Q5_0, q8_q5_0, 1, 0) X(CK_Q8_0, q8_q8_0, 1, 0)              \
    X(CK_Q4_K, q8_q4_K, 0, 1) X(CK_Q6_K, q8_q6_K, 1, 0)

/// One or two rows (w1 may be NULL) against V (1..4) quantized vectors. Signed weights use the sign trick
/// (|q| times x with q's sign), since VPMADDUBSW multiplies unsigned by signed bytes; pair sums stay below
/// 2·128·127 < 2^15, so nothing saturates.
static inline __attribute__((always_inline)) void q8_rows(q8_group_fn fn, const int is_signed, const int has_min,
                                                         const uint8_t *w0, const uint8_t *w1, const int8_t *const *xq_,
                                                         const float *const *xd_, const float *const *xs_, const int V,
                                                         int64_t groups, float out[2][4]) {
    // Local copies of the vector pointers, so they live in registers rather than being reloaded per block.
    const int8_t *xq[4];
    const float *xd[4], *xs[4];
    for (int v = 0; v < V; v++) xq[v] = xq_[v], xd[v] = xd_[v], xs[v] = xs_[v];
    __m256 acc[2][4];
    float macc[2][4];
    for (int r = 0; r < 2; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm256_setzero_ps(), macc[r][v] = 0;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t g = 0; g < groups; g++) {
        __m256i q0, q1 = _mm256_setzero_si256();
        __m256 s0, s1 = _mm256_setzero_ps();
        float m0, m1 = 0;
        fn(w0, g, &q0, &s0, &m0);
        if (w1) fn(w1, g, &q1, &s1, &m1);
        const __m256i a0 = is_signed ? _mm256_abs_epi8(q0) : q0, a1 = is_signed ? _mm256_abs_epi8(q1) : q1;
        for (int v = 0; v < V; v++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(xq[v] + 32 * g));
            const __m256 dx = _mm256_broadcast_ss(xd[v] + g);
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(a0, is_signed ? _mm256_sign_epi8(x, q0) : x), ones);
            acc[0][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_mul_ps(s0, dx), acc[0][v]);
            if (has_min) macc[0][v] = fmaf(m0, xs[v][g], macc[0][v]);
            if (w1) {
                const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(a1, is_signed ? _mm256_sign_epi8(x, q1) : x), ones);
                acc[1][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_mul_ps(s1, dx), acc[1][v]);
                if (has_min) macc[1][v] = fmaf(m1, xs[v][g], macc[1][v]);
            }
        }
    }
    for (int v = 0; v < V; v++) out[0][v] = hsum(acc[0][v]) + macc[0][v], out[1][v] = hsum(acc[1][v]) + macc[1][v];
}

static void q8_dispatch(int type, const uint8_t *w0, const uint8_t *w1, const int8_t *const *xq, const float *const *xd,
                        const float *const *xs, int V, int64_t groups, float out[2][4]) {
#define CK_Q8_V(t, fn, sgn, min, V)                                                                                        \
    case t:                                                                                                               \
        if (w1) q8_rows(fn, sgn, min, w0, w1, xq, xd, xs, V, groups, out);                                               \
        else q8_rows(fn, sgn, min, w0, NULL, xq, xd, xs, V, groups, out);                                                \
        break;
#define CK_Q8_1(t, fn, sgn, min) CK_Q8_V(t, fn, sgn, min, 1)
#define CK_Q8_2(t, fn, sgn, min) CK_Q8_V(t, fn, sgn, min, 2)
#define CK_Q8_3(t, fn, sgn, min) CK_Q8_V(t, fn, sgn, min, 3)
#define CK_Q8_4(t, fn, sgn, min) CK_Q8_V(t, fn, sgn, min, 4)
    switch (V) {
    case 1: switch (type) { CK_Q8_TYPES(CK_Q8_1) } break;
    case 2: switch (type) { CK_Q8_TYPES(CK_Q8_2) } break;
    case 3: switch (type) { CK_Q8_TYPES(CK_Q8_3) } break;
    default: switch (type) { CK_Q8_TYPES(CK_Q8_4) } break;
    }
#undef CK_Q8_V
#undef CK_Q8_1
#undef CK_Q8_2
#undef CK_Q8_3
#undef CK_Q8_4
}

/// Rows two at a time; the vectors four at a time against each pair (the pair's blocks are decoded again for
/// each four, from L1). With `parts` 2, quantized vectors come in (high, residual) pairs whose results are
/// added (ck_quantize_q8_split).
int ck_matmul_q8_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y,
                      int64_t y_stride, int64_t batch, int parts, int64_t row_begin, int64_t row_end) {
    if (!ck_q8_supports(type, cols) || (parts != 1 && parts != 2)) return -1;
    const int64_t groups = cols / 32, slots = batch * parts;
    const uint8_t *end = w + row_end * row_bytes;
    float out[2][4];
    for (int64_t r = row_begin; r < row_end; r += 2) {
        const int pair = r + 1 < row_end;
        ck_prefetch_ahead(w + r * row_bytes, (pair ? 2 : 1) * row_bytes, CK_PREFETCH_BYTES, end);
        for (int64_t b = 0; b < slots; b += 4) {
            const int V = slots - b < 4 ? (int)(slots - b) : 4;
            const int8_t *xv[4];
            const float *xd[4], *xs[4];
            ck_q8_vectors(xq, xq_stride, cols, b, V, xv, xd, xs);
            q8_dispatch(type, w + r * row_bytes, pair ? w + (r + 1) * row_bytes : NULL, xv, xd, xs, V, groups, out);
            for (int v = 0; v < V; v += parts) {
                const int64_t row = (b + v) / parts;
                y[row * y_stride + r] = parts == 2 ? out[0][v] + out[0][v + 1] : out[0][v];
                if (pair) y[row * y_stride + r + 1] = parts == 2 ? out[1][v] + out[1][v + 1] : out[1][v];
            }
        }
    }
    return 0;
}

#pragma clang attribute pop
#endif
