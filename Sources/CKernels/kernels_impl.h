// Kernel bodies, compiled once per instruction set (kernels.c: baseline x86-64 / any arm64;
// kernels_avx2.c: AVX2+FMA+F16C), each copy suffixed by CK_SUFFIX and picked at run time.
#include <math.h>
#include <string.h>
#include "CKernels.h"

#define CK_CAT2(a, b) a##b
#define CK_CAT(a, b) CK_CAT2(a, b)
#define CK_NAME(n) CK_CAT(n, CK_SUFFIX)
static inline float f16_to_f32(uint16_t h) {
    _Float16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static void q8_0(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x));
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)x[2 + j] * d;
}

static void q4_0(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x));
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((x[2 + j] & 0x0F) - 8) * d;
        y[j + 16] = (float)((x[2 + j] >> 4) - 8) * d;
    }
}

static void q4_1(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x)), m = f16_to_f32(rd16(x + 2));
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(x[4 + j] & 0x0F) * d + m;
        y[j + 16] = (float)(x[4 + j] >> 4) * d + m;
    }
}

static void q5_0(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x));
    const uint32_t qh = rd32(x + 2);
    for (int j = 0; j < 16; j++) {
        const uint32_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (float)((int32_t)((x[6 + j] & 0x0F) | h0) - 16) * d;
        y[j + 16] = (float)((int32_t)((x[6 + j] >> 4) | h1) - 16) * d;
    }
}

static void q5_1(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x)), m = f16_to_f32(rd16(x + 2));
    const uint32_t qh = rd32(x + 4);
    for (int j = 0; j < 16; j++) {
        const uint32_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (float)((x[8 + j] & 0x0F) | h0) * d + m;
        y[j + 16] = (float)((x[8 + j] >> 4) | h1) * d + m;
    }
}

static inline void scale_min_k4(int j, const uint8_t *q, float *sc, float *m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void q4_K(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x)), dmin = f16_to_f32(rd16(x + 2));
    const uint8_t *scales = x + 4, *q = x + 16;
    for (int pair = 0; pair < 4; pair++) {
        float sc1, m1, sc2, m2;
        scale_min_k4(2 * pair, scales, &sc1, &m1);
        scale_min_k4(2 * pair + 1, scales, &sc2, &m2);
        const float d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2;
        for (int l = 0; l < 32; l++) y[l] = d1 * (float)(q[l] & 0x0F) - min1;
        for (int l = 0; l < 32; l++) y[l + 32] = d2 * (float)(q[l] >> 4) - min2;
        q += 32;
        y += 64;
    }
}

static void q5_K(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x)), dmin = f16_to_f32(rd16(x + 2));
    const uint8_t *scales = x + 4, *qh = x + 16, *ql = x + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int pair = 0; pair < 4; pair++) {
        float sc1, m1, sc2, m2;
        scale_min_k4(2 * pair, scales, &sc1, &m1);
        scale_min_k4(2 * pair + 1, scales, &sc2, &m2);
        const float d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2;
        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (float)((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - min1;
            y[l + 32] = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - min2;
        }
        ql += 32;
        y += 64;
        u1 <<= 2;
        u2 <<= 2;
    }
}

static void q6_K(const uint8_t *x, float *y) {
    const float d = f16_to_f32(rd16(x + 208));
    const uint8_t *ql = x, *qh = x + 128;
    const int8_t *sc = (const int8_t *)(x + 192);
    for (int half = 0; half < 2; half++) {
        for (int l = 0; l < 32; l++) {
            const int s = l / 16;
            const int q1 = (int)((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = (int)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[s] * (float)q1;
            y[l + 32] = d * (float)sc[s + 2] * (float)q2;
            y[l + 64] = d * (float)sc[s + 4] * (float)q3;
            y[l + 96] = d * (float)sc[s + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

typedef void (*block_fn)(const uint8_t *, float *);

static int block_info(int type, int *elements, int *bytes, block_fn *fn) {
    switch (type) {
    case CK_Q4_0: *elements = 32; *bytes = 18; *fn = q4_0; return 0;
    case CK_Q4_1: *elements = 32; *bytes = 20; *fn = q4_1; return 0;
    case CK_Q5_0: *elements = 32; *bytes = 22; *fn = q5_0; return 0;
    case CK_Q5_1: *elements = 32; *bytes = 24; *fn = q5_1; return 0;
    case CK_Q8_0: *elements = 32; *bytes = 34; *fn = q8_0; return 0;
    case CK_Q4_K: *elements = 256; *bytes = 144; *fn = q4_K; return 0;
    case CK_Q5_K: *elements = 256; *bytes = 176; *fn = q5_K; return 0;
    case CK_Q6_K: *elements = 256; *bytes = 210; *fn = q6_K; return 0;
    default: return -1;
    }
}

int CK_NAME(ck_dequantize_)(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *s = (const uint8_t *)src;
    switch (type) {
    case CK_F32: memcpy(dst, src, (size_t)n * 4); return 0;
    case CK_F16: for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(rd16(s + 2 * i)); return 0;
    case CK_BF16: for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(rd16(s + 2 * i)); return 0;
    case CK_I8: for (int64_t i = 0; i < n; i++) dst[i] = (float)(int8_t)s[i]; return 0;
    default: break;
    }
    int elements, bytes;
    block_fn fn;
    if (block_info(type, &elements, &bytes, &fn) != 0) return -1;
    for (int64_t b = 0; b < n / elements; b++) fn(s + b * bytes, dst + b * elements);
    return 0;
}

static inline float dot(const float *a, const float *b, int n) {
    float acc[8] = {0};
    for (int i = 0; i < n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

int CK_NAME(ck_matvec_)(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, float *y,
              int64_t row_begin, int64_t row_end) {
    const uint8_t *base = (const uint8_t *)w;
    float buf[256];
    if (type == CK_F32 && cols % 8 == 0) {
        for (int64_t r = row_begin; r < row_end; r++) y[r] = dot((const float *)(base + r * row_bytes), x, (int)cols);
        return 0;
    }
    int elements, bytes;
    block_fn fn;
    if (block_info(type, &elements, &bytes, &fn) != 0) {
        // Element types (F16, BF16, I8): expand 256 at a time.
        if (type != CK_F32 && type != CK_F16 && type != CK_BF16 && type != CK_I8) return -1;
        const int width = type == CK_F32 ? 4 : type == CK_I8 ? 1 : 2;
        for (int64_t r = row_begin; r < row_end; r++) {
            const uint8_t *row = base + r * row_bytes;
            float acc = 0;
            for (int64_t c = 0; c < cols; c += 256) {
                const int n = (int)(cols - c < 256 ? cols - c : 256);
                CK_NAME(ck_dequantize_)(type, row + c * width, buf, n);
                for (int k = 0; k < n; k++) acc += buf[k] * x[c + k];
            }
            y[r] = acc;
        }
        return 0;
    }
    const int64_t blocks = cols / elements;
    for (int64_t r = row_begin; r < row_end; r++) {
        const uint8_t *row = base + r * row_bytes;
        float acc = 0;
        for (int64_t b = 0; b < blocks; b++) {
            fn(row + b * bytes, buf);
            acc += dot(buf, x + b * elements, elements);
        }
        y[r] = acc;
    }
    return 0;
}

/// Σ a[i]·b[i] over n values in eight interleaved partial sums (vectorizes without reassociation).
static inline float dot_any(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/// Row `t` of a KV cache as f32: the row itself for f32, else widened (bf16) or scaled (int8) into `tmp`.
static inline const float *kv_row(int kv_type, const void *base, const float *scales, int64_t t, int64_t stride, int64_t n,
                                  float *tmp) {
    switch (kv_type) {
    case CK_KV_BF16: {
        const uint16_t *r = (const uint16_t *)base + t * stride;
        for (int64_t i = 0; i < n; i++) tmp[i] = bf16_to_f32(r[i]);
        return tmp;
    }
    case CK_KV_I8: {
        const int8_t *r = (const int8_t *)base + t * stride;
        const float d = scales[t];
        for (int64_t i = 0; i < n; i++) tmp[i] = (float)r[i] * d;
        return tmp;
    }
    default: return (const float *)base + t * stride;
    }
}

void CK_NAME(ck_attention_)(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                            const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                            float *scores, float *out, float *stats) {
    float tmp[512];
    float max = -__builtin_inff();
    for (int64_t t = 0; t < span; t++) {
        float s = dot_any(q, kv_row(kv_type, keys, key_scales, t, stride, head_dim, tmp), head_dim) * scale;
        if (softcap > 0) s = softcap * tanhf(s / softcap);
        scores[t] = s;
        if (s > max) max = s;
    }
    float sum = 0;
    for (int64_t t = 0; t < span; t++) {
        scores[t] = expf(scores[t] - max);
        sum += scores[t];
    }
    for (int64_t i = 0; i < head_dim; i++) out[i] = 0;
    for (int64_t t = 0; t < span; t++) {
        const float p = scores[t] / sum;
        const float *v = kv_row(kv_type, values, value_scales, t, stride, head_dim, tmp);
        for (int64_t i = 0; i < head_dim; i++) out[i] += p * v[i];
    }
    if (stats) stats[0] = max, stats[1] = sum;
}

/// `n` f32 values stored as a cache row of `kv_type` at `dst` (int8: one scale for the row into `*scale`).
void CK_NAME(ck_kv_store_)(int kv_type, const float *x, int64_t n, void *dst, float *scale) {
    switch (kv_type) {
    case CK_KV_BF16: {
        uint16_t *d = (uint16_t *)dst;
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], 4);
            d[i] = x[i] != x[i] ? (uint16_t)((bits >> 16) | 0x40) : (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
        }
        return;
    }
    case CK_KV_I8: {
        float top = 0;
        for (int64_t i = 0; i < n; i++) top = fmaxf(top, fabsf(x[i]));
        // scale = max |x| / 127 (1 for an all-zero row); values rounded half to even, as the PJRT programs do.
        const float d = top > 0 ? top / 127.0f : 1.0f;
        int8_t *q = (int8_t *)dst;
        for (int64_t i = 0; i < n; i++) q[i] = (int8_t)fminf(127.0f, fmaxf(-127.0f, nearbyintf(x[i] / d)));
        *scale = d;
        return;
    }
    default: memcpy(dst, x, (size_t)n * sizeof(float));
    }
}
