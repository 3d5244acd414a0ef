// Integer products against int8-quantized activations (the portable copy; kernels_x86_q8.c has the AVX2 one).
// A weight block of 32 values is read as integers q with per-16 scales ws and an additive minimum m
// (value_i = ws[i/16]·q_i + m); the activation block as int8 values with one scale d and d·Σq. Then
//   Σ w·x ≈ Σ_h ws_h·d·(Σ_{i∈h} q_i·xq_i) + m·d·Σ xq,
// where the inner sums are exact integers. Weights are never expanded to f32 and the multiply-adds are
// 8-bit, which is what makes single-stream decode cheaper than the f32 path (llama.cpp's scheme).
#include <math.h>
#include <string.h>

#include "CKernels.h"

static inline float q8_f16(const uint8_t *p) {
    _Float16 v;
    memcpy(&v, p, 2);
    return (float)v;
}

int64_t ck_q8_size(int64_t cols) { return cols + 8 * (cols / 32); }

int ck_q8_supports(int type, int64_t cols) {
    switch (type) {
    case CK_Q4_0: case CK_Q4_1: case CK_Q5_0: case CK_Q8_0: return cols % 32 == 0;
    case CK_Q4_K: case CK_Q6_K: return cols % 256 == 0;
    default: return 0;
    }
}

/// One block of 32 quantized as ck_quantize_q8 does; returns Σq.
static int quantize_block(const float *xb, int8_t *q, float *d) {
    float top = 0;
    for (int i = 0; i < 32; i++) top = fmaxf(top, fabsf(xb[i]));
    const float inv = top > 0 ? 127.0f / top : 0.0f;
    int sum = 0;
    for (int i = 0; i < 32; i++) {
        const int v = (int)nearbyintf(xb[i] * inv);
        q[i] = (int8_t)v;
        sum += v;
    }
    *d = top / 127.0f;
    return sum;
}

void ck_quantize_q8_generic(const float *x, int64_t cols, void *out) {
    int8_t *q = (int8_t *)out;
    float *d = (float *)((uint8_t *)out + cols), *s = d + cols / 32;
    for (int64_t g = 0; g < cols / 32; g++) {
        const int sum = quantize_block(x + 32 * g, q + 32 * g, &d[g]);
        s[g] = d[g] * (float)sum;
    }
}

void ck_quantize_q8_split(const float *x, int64_t cols, void *high, void *residual) {
    int8_t *qh = (int8_t *)high, *ql = (int8_t *)residual;
    float *dh = (float *)((uint8_t *)high + cols), *sh = dh + cols / 32;
    float *dl = (float *)((uint8_t *)residual + cols), *sl = dl + cols / 32;
    for (int64_t g = 0; g < cols / 32; g++) {
        const int high_sum = quantize_block(x + 32 * g, qh + 32 * g, &dh[g]);
        sh[g] = dh[g] * (float)high_sum;
        // What the high part leaves out (at most half its step), quantized again: ~16 bits in all.
        float rest[32];
        for (int i = 0; i < 32; i++) rest[i] = x[32 * g + i] - dh[g] * (float)qh[32 * g + i];
        const int rest_sum = quantize_block(rest, ql + 32 * g, &dl[g]);
        sl[g] = dl[g] * (float)rest_sum;
    }
}

/// Block g (values 32g..32g+31) of a weight row as integers: value_i = ws[i/16]·q[i] + m. Also what the
/// eight-row packer (kernels_x86_r8.c) reads blocks with.
void ck_q8_unpack(int type, const uint8_t *row, int64_t g, int8_t q[32], float ws[2], float *m);
void ck_q8_unpack(int type, const uint8_t *row, int64_t g, int8_t q[32], float ws[2], float *m) {
    *m = 0;
    switch (type) {
    case CK_Q4_0: case CK_Q4_1: {
        const int min = type == CK_Q4_1;
        const uint8_t *w = row + g * (min ? 20 : 18), *qs = w + (min ? 4 : 2);
        for (int j = 0; j < 16; j++) q[j] = (int8_t)((qs[j] & 15) - (min ? 0 : 8)), q[j + 16] = (int8_t)((qs[j] >> 4) - (min ? 0 : 8));
        ws[0] = ws[1] = q8_f16(w);
        if (min) *m = q8_f16(w + 2);
        return;
    }
    case CK_Q5_0: {
        const uint8_t *w = row + g * 22;
        uint32_t qh;
        memcpy(&qh, w + 2, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(((w[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16);
            q[j + 16] = (int8_t)(((w[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
        }
        ws[0] = ws[1] = q8_f16(w);
        return;
    }
    case CK_Q8_0: {
        const uint8_t *w = row + g * 34;
        memcpy(q, w + 2, 32);
        ws[0] = ws[1] = q8_f16(w);
        return;
    }
    case CK_Q4_K: {
        // Sub-block j of a 256-value super-block; sub-blocks 2p and 2p+1 share 32 bytes (low, high nibbles).
        const uint8_t *w = row + (g / 8) * 144, *sc = w + 4;
        const int j = (int)(g % 8);
        const int scale = j < 4 ? sc[j] & 63 : (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        const int min = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        const uint8_t *qs = w + 16 + 32 * (j / 2);
        for (int i = 0; i < 32; i++) q[i] = (int8_t)(j & 1 ? qs[i] >> 4 : qs[i] & 15);
        ws[0] = ws[1] = q8_f16(w) * (float)scale;
        *m = -(q8_f16(w + 2) * (float)min);
        return;
    }
    case CK_Q6_K: {
        // Group j of a 128-value half: low 4 bits from ql (high nibbles for j ≥ 2), high 2 bits from qh.
        const uint8_t *w = row + (g / 8) * 210;
        const int half = (int)(g % 8) / 4, j = (int)(g % 4);
        const uint8_t *ql = w + 64 * half + 32 * (j & 1), *qh = w + 128 + 32 * half;
        const int8_t *sc = (const int8_t *)(w + 192) + 8 * half;
        for (int i = 0; i < 32; i++) q[i] = (int8_t)((((j < 2 ? ql[i] : ql[i] >> 4) & 15) | (((qh[i] >> (2 * j)) & 3) << 4)) - 32);
        const float d = q8_f16(w + 208);
        ws[0] = d * (float)sc[2 * j];
        ws[1] = d * (float)sc[2 * j + 1];
        return;
    }
    default: return;
    }
}

int ck_matmul_q8_generic(int type, const void *w, int64_t row_bytes, int64_t cols, const void *xq, int64_t xq_stride, float *y,
                         int64_t y_stride, int64_t batch, int parts, int64_t row_begin, int64_t row_end) {
    if (!ck_q8_supports(type, cols) || (parts != 1 && parts != 2)) return -1;
    const int64_t groups = cols / 32;
    int8_t q[32];
    float ws[2], m;
    for (int64_t r = row_begin; r < row_end; r++) {
        const uint8_t *row = (const uint8_t *)w + r * row_bytes;
        for (int64_t b = 0; b < batch * parts; b++) {
            const int8_t *xb = (const int8_t *)xq + b * xq_stride;
            const float *d = (const float *)(xb + cols), *s = d + groups;
            // Eight partial sums of four products each, as the AVX2 lanes hold them.
            float acc[8] = {0}, macc = 0;
            for (int64_t g = 0; g < groups; g++) {
                ck_q8_unpack(type, row, g, q, ws, &m);
                for (int lane = 0; lane < 8; lane++) {
                    int sum = 0;
                    for (int k = 0; k < 4; k++) sum += q[4 * lane + k] * xb[32 * g + 4 * lane + k];
                    acc[lane] += (float)sum * (ws[lane / 4] * d[g]);
                }
                macc += m * s[g];
            }
            const float sum = (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))) + macc;
            // Parts of one vector (high, residual) are added in that order.
            if (b % parts == 0) y[b / parts * y_stride + r] = sum;
            else y[b / parts * y_stride + r] += sum;
        }
    }
    return 0;
}
