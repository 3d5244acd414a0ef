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

float ck_dot_q8_0_avx2(const uint8_t *row, const float *x, int64_t blocks) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; b++, row += 34, x += 32) {
        const __m128i q0 = _mm_loadu_si128((const __m128i *)(row + 2)), q1 = _mm_loadu_si128((const __m128i *)(row + 18));
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q0)), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q0, 8))), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q1)), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q1, 8))), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(row)), s, acc);
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
        const __m128i v0 = _mm256_castsi256_si128(v), v1 = _mm256_extracti128_si256(v, 1);
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v0)), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v0, 8))), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v1)), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v1, 8))), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(row)), s, acc);
    }
    return hsum(acc);
}

#pragma clang attribute pop
#endif
