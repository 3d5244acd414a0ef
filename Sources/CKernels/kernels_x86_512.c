// AVX-512F kernels, selected at run time when the CPU has AVX-512F/BW/VL: the 4×6 / 4×4 register-blocked
// expand-once matmul the engine uses, and fused dequantize-and-dot kernels for Q4_0, Q4_1 and Q8_0 behind
// ck_matvec (sixteen lanes halve the conversion work per weight compared with AVX2).
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

/// Expands one weight row to f32 (SIMD for the 32-element block types); in kernels_x86.c.
int ck_expand_row(int type, const uint8_t *w, float *y, int64_t cols);

/// R expanded rows · T activation vectors. Each (row, vector) pair has its own 16-lane accumulator
/// summed over the columns in order (the last partial chunk masked) and reduced the same way, so every
/// grouping gives bit-identical results: a sequence's logits do not depend on its batch neighbours.
static inline __attribute__((always_inline)) void dots512(const int R, const int T, const float *const *w,
                                                          const float *const *x, int64_t n, float *out) {
    __m512 acc[4][6];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m512 wv[4];
        for (int r = 0; r < R; r++) wv[r] = _mm512_loadu_ps(w[r] + c);
        for (int t = 0; t < T; t++) {
            const __m512 xv = _mm512_loadu_ps(x[t] + c);
            for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (c < n) {
        const __mmask16 m = (__mmask16)((1u << (n - c)) - 1);
        __m512 wv[4];
        for (int r = 0; r < R; r++) wv[r] = _mm512_maskz_loadu_ps(m, w[r] + c);
        for (int t = 0; t < T; t++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x[t] + c);
            for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) out[r * T + t] = _mm512_reduce_add_ps(acc[r][t]);
}

/// Batched rows (prefill chunks, many decode slots): expand four weight rows into `buf` (4 × cols
/// floats, reused from L1/L2) and multiply them with the activation vectors six, then four at a time
/// (register blocks of 16-lane FMAs), then one at a time.
int ck_matmul_expand_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t cols, const float *x, int64_t x_stride,
                            float *y, int64_t y_stride, int64_t batch, int64_t row_begin, int64_t row_end, float *buf) {
    const uint8_t *end = w + row_end * row_bytes;
    for (int64_t r = row_begin; r < row_end; r += 4) {
        const int rows = row_end - r < 4 ? (int)(row_end - r) : 4;
        ck_prefetch_ahead(w + r * row_bytes, rows * row_bytes, CK_PREFETCH_BYTES, end);
        const float *wr[4];
        for (int i = 0; i < rows; i++) {
            if (ck_expand_row(type, w + (r + i) * row_bytes, buf + i * cols, cols) != 0) return -1;
            wr[i] = buf + i * cols;
        }
        int64_t b = 0;
        if (rows == 4) {
            // 4 rows × 6 vectors: 24 accumulators, 10 loads per 24 FMAs.
            for (; b + 6 <= batch; b += 6) {
                const float *const xs[6] = {x + b * x_stride, x + (b + 1) * x_stride, x + (b + 2) * x_stride,
                                            x + (b + 3) * x_stride, x + (b + 4) * x_stride, x + (b + 5) * x_stride};
                float out[24];
                dots512(4, 6, wr, xs, cols, out);
                for (int i = 0; i < 4; i++)
                    for (int t = 0; t < 6; t++) y[(b + t) * y_stride + r + i] = out[i * 6 + t];
            }
            for (; b + 4 <= batch; b += 4) {
                const float *const xs[4] = {x + b * x_stride, x + (b + 1) * x_stride, x + (b + 2) * x_stride, x + (b + 3) * x_stride};
                float out[16];
                dots512(4, 4, wr, xs, cols, out);
                for (int i = 0; i < 4; i++)
                    for (int t = 0; t < 4; t++) y[(b + t) * y_stride + r + i] = out[i * 4 + t];
            }
        }
        // The last one to three vectors (single-stream decode is all of it): four rows at once share
        // each activation load.
        if (rows == 4 && b < batch) {
            const int64_t left = batch - b;
            const float *const xs[3] = {x + b * x_stride, x + (b + (left > 1)) * x_stride, x + (b + 2 * (left > 2)) * x_stride};
            float out[12];
            if (left == 1) dots512(4, 1, wr, xs, cols, out);
            else if (left == 2) dots512(4, 2, wr, xs, cols, out);
            else dots512(4, 3, wr, xs, cols, out);
            for (int i = 0; i < 4; i++)
                for (int t = 0; t < left; t++) y[(b + t) * y_stride + r + i] = out[i * (int)left + t];
            b = batch;
        }
        for (; b < batch; b++) {
            const float *const xs[1] = {x + b * x_stride};
            for (int i = 0; i < rows; i++) {
                const float *const wi[1] = {wr[i]};
                dots512(1, 1, wi, xs, cols, &y[b * y_stride + r + i]);
            }
        }
    }
    return 0;
}

#pragma clang attribute pop
#endif
