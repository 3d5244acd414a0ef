// AVX-512F fused dequantize-and-dot kernels for Q4_0, Q4_1 and Q8_0: sixteen lanes halve the
// conversion work per weight compared with AVX2. Selected at run time when the CPU has AVX-512F.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))), apply_to = function)

#include "kernels_x86.h"

/// Σ q·x over 32 nibbles (low nibbles are elements 0..15, high 16..31), minus `offset` from each q.
static inline __m512 nibbles512(const uint8_t *qs, const float *x, __m512i offset) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(q, mask)), offset));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), mask)), offset));
    return _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(x)));
}

float ck_dot_q4_0_avx512(const uint8_t *row, const float *x, int64_t blocks) {
    __m512 acc = _mm512_setzero_ps();
    const __m512i eight = _mm512_set1_epi32(8);
    for (int64_t b = 0; b < blocks; b++, row += 18, x += 32)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(ck_h2f(row)), nibbles512(row + 2, x, eight), acc);
    return _mm512_reduce_add_ps(acc);
}

float ck_dot_q4_1_avx512(const uint8_t *row, const float *x, int64_t blocks) {
    __m512 acc = _mm512_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t b = 0; b < blocks; b++, row += 20, x += 32) {
        acc = _mm512_fmadd_ps(_mm512_set1_ps(ck_h2f(row)), nibbles512(row + 4, x, zero), acc);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(ck_h2f(row + 2)), _mm512_add_ps(_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

float ck_dot_q8_0_avx512(const uint8_t *row, const float *x, int64_t blocks) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; b++, row += 34, x += 32) {
        const __m512 v0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + 2))));
        const __m512 v1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + 18))));
        const __m512 s = _mm512_fmadd_ps(v1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(v0, _mm512_loadu_ps(x)));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(ck_h2f(row)), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

#pragma clang attribute pop
#endif
