// Fused dequantize-and-dot AVX2/FMA/F16C kernels for the 32-element block types (Q4_0, Q4_1, Q5_0, Q8_0):
// one weight row against f32 activations, without expanding the row. Used by ck_matvec when the CPU
// has AVX2; checked against the portable kernels in the tests.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/// Σ_j q[j]·x[j] for 32 unsigned 4-bit values (low nibbles 0..15, high nibbles 16..31).
static inline __m256 dot_nibbles(const uint8_t *qs, const float *x, __m256i offset) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
    __m256 acc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(lo), offset)), _mm256_loadu_ps(x));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), offset)),
                          _mm256_loadu_ps(x + 8), acc);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(hi), offset)), _mm256_loadu_ps(x + 16), acc);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), offset)),
                          _mm256_loadu_ps(x + 24), acc);
    return acc;
}

static inline __m256 sum32(const float *x) {
    return _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)),
                         _mm256_add_ps(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)));
}

float ck_dot_q4_1_avx2(const uint8_t *row, const float *x, int64_t blocks) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i zero = _mm256_setzero_si256();
    for (int64_t b = 0; b < blocks; b++, row += 20, x += 32) {
        // value = q·d + m, so the block contributes d·Σq·x + m·Σx.
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(row)), dot_nibbles(row + 4, x, zero), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(row + 2)), sum32(x), acc);
    }
    return hsum(acc);
}

float ck_dot_q4_0_avx2(const uint8_t *row, const float *x, int64_t blocks) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i eight = _mm256_set1_epi32(8);
    for (int64_t b = 0; b < blocks; b++, row += 18, x += 32)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(row)), dot_nibbles(row + 2, x, eight), acc);
    return hsum(acc);
}

/// Σ_j v[j]·x[j] for 32 signed bytes held in two 16-byte halves.
static inline __m256 dot_i8x32(__m128i v0, __m128i v1, const float *x) {
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v0)), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v0, 8))), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v1)), _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v1, 8))), _mm256_loadu_ps(x + 24), s);
}

float ck_dot_q8_0_avx2(const uint8_t *row, const float *x, int64_t blocks) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; b++, row += 34, x += 32) {
        const __m128i q0 = _mm_loadu_si128((const __m128i *)(row + 2)), q1 = _mm_loadu_si128((const __m128i *)(row + 18));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(row)), dot_i8x32(q0, q1, x), acc);
    }
    return hsum(acc);
}

/// 32 bits → 32 bytes of 0x10 where the bit is set (the fifth bit of Q5 values).
static inline __m256i fifth_bits(uint32_t qh) {
    const __m256i shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuffle);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    bytes = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    return _mm256_and_si256(bytes, _mm256_set1_epi8(0x10));
}

float ck_dot_q5_0_avx2(const uint8_t *row, const float *x, int64_t blocks) {
    __m256 acc = _mm256_setzero_ps();
    const __m128i mask = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < blocks; b++, row += 22, x += 32) {
        uint32_t qh;
        memcpy(&qh, row + 2, 4);
        const __m128i q = _mm_loadu_si128((const __m128i *)(row + 6));
        // Element j (0..31): low nibbles are 0..15, high nibbles 16..31; bit j of qh is its fifth bit.
        const __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), mask), _mm_and_si128(q, mask));
        const __m256i v = _mm256_sub_epi8(_mm256_or_si256(nib, fifth_bits(qh)), _mm256_set1_epi8(16));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(row)),
                              dot_i8x32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1), x), acc);
    }
    return hsum(acc);
}

/// Σ_c row[c]·x_b[c] for four activation vectors at once: each expanded row chunk is loaded once.
static inline void dot4(const float *row, const float *x0, const float *x1, const float *x2, const float *x3, int64_t n,
                        float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        const __m256 w = _mm256_loadu_ps(row + c);
        a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x0 + c), a0);
        a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x1 + c), a1);
        a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x2 + c), a2);
        a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(x3 + c), a3);
    }
    out[0] = hsum(a0), out[1] = hsum(a1), out[2] = hsum(a2), out[3] = hsum(a3);
    for (; c < n; c++) {
        out[0] += row[c] * x0[c], out[1] += row[c] * x1[c], out[2] += row[c] * x2[c], out[3] += row[c] * x3[c];
    }
}

static inline float dot1(const float *row, const float *x, int64_t n) {
    __m256 a = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(x + c), a);
    float sum = hsum(a);
    for (; c < n; c++) sum += row[c] * x[c];
    return sum;
}

/// Batched rows for larger batches (prefill, many slots): expand each weight row once into `buf`
/// (cols floats) and dot it with the activation vectors four at a time.
int ck_matmul_expand_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t cols, const float *x, int64_t x_stride,
                          float *y, int64_t y_stride, int64_t batch, int64_t row_begin, int64_t row_end, float *buf) {
    for (int64_t r = row_begin; r < row_end; r++) {
        if (ck_dequantize(type, w + r * row_bytes, buf, cols) != 0) return -1;
        int64_t b = 0;
        float out[4];
        for (; b + 4 <= batch; b += 4) {
            dot4(buf, x + b * x_stride, x + (b + 1) * x_stride, x + (b + 2) * x_stride, x + (b + 3) * x_stride, cols, out);
            for (int k = 0; k < 4; k++) y[(b + k) * y_stride + r] = out[k];
        }
        for (; b < batch; b++) y[b * y_stride + r] = dot1(buf, x + b * x_stride, cols);
    }
    return 0;
}

#pragma clang attribute pop
#endif
