// Portable kernels (any x86-64, arm64) and the run-time dispatch to the AVX2 copy when the CPU has it.
// Block layouts are GGUF's and the arithmetic follows ggml's reference order. Compiled -O3 even in
// debug builds so the engine tests run at a usable speed.
#define CK_SUFFIX generic
#include "kernels_impl.h"

int ck_dequantize_avx2(int type, const void *src, float *dst, int64_t n);
int ck_matvec_avx2(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, float *y, int64_t row_begin,
                   int64_t row_end);

int ck_has_avx2(void) {
#if defined(__x86_64__)
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return cached;
#else
    return 0;
#endif
}

static int forced_generic = 0;
void ck_force_generic(int on) { forced_generic = on; }

int ck_dequantize(int type, const void *src, float *dst, int64_t n) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) return ck_dequantize_avx2(type, src, dst, n);
#endif
    return ck_dequantize_generic(type, src, dst, n);
}

float ck_dot_q4_0_avx2(const uint8_t *row, const float *x, int64_t blocks);
float ck_dot_q4_1_avx2(const uint8_t *row, const float *x, int64_t blocks);
float ck_dot_q5_0_avx2(const uint8_t *row, const float *x, int64_t blocks);
float ck_dot_q8_0_avx2(const uint8_t *row, const float *x, int64_t blocks);

int ck_matvec(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, float *y, int64_t row_begin,
              int64_t row_end) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) {
        float (*fused)(const uint8_t *, const float *, int64_t) = NULL;
        switch (type) {
        case CK_Q4_0: fused = ck_dot_q4_0_avx2; break;
        case CK_Q4_1: fused = ck_dot_q4_1_avx2; break;
        case CK_Q5_0: fused = ck_dot_q5_0_avx2; break;
        case CK_Q8_0: fused = ck_dot_q8_0_avx2; break;
        default: break;
        }
        if (fused != NULL) {
            const uint8_t *base = (const uint8_t *)w;
            for (int64_t r = row_begin; r < row_end; r++) y[r] = fused(base + r * row_bytes, x, cols / 32);
            return 0;
        }
        return ck_matvec_avx2(type, w, row_bytes, cols, x, y, row_begin, row_end);
    }
#endif
    return ck_matvec_generic(type, w, row_bytes, cols, x, y, row_begin, row_end);
}
