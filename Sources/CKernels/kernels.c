// Portable kernels (any x86-64, arm64) and the run-time dispatch to the AVX2, AVX-512 (VNNI) and AMX copies
// that the CPU runs.
// Block layouts are GGUF's and the arithmetic follows ggml's reference order. Compiled -O3 even in
// debug builds so the engine tests run at a usable speed.
#define CK_SUFFIX generic
#include "kernels_impl.h"

#include <stdlib.h>

int ck_dequantize_avx2(int type, const void *src, float *dst, int64_t n);
void ck_attention_avx2(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                       const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                       float *scores, float *out, float *stats);
int ck_attention_simd_avx2(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                           const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                           float *scores, float *out, float *stats);
int ck_matvec_avx2(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, float *y, int64_t row_begin,
                   int64_t row_end);

#if defined(__x86_64__)
/// `probe()`'s answer, computed once: threads may race to fill it in, all with the same value.
static int cached_answer(int *cache, int (*probe)(void)) {
    int v = __atomic_load_n(cache, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = probe();
        __atomic_store_n(cache, v, __ATOMIC_RELAXED);
    }
    return v;
}

static int probe_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
static int probe_avx512(void) {
    return ck_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
static int probe_avx512_vnni(void) { return ck_has_avx512() && __builtin_cpu_supports("avx512vnni"); }

static int avx2_answer = -1, avx512_answer = -1, vnni_answer = -1;
int ck_has_avx2(void) { return cached_answer(&avx2_answer, probe_avx2); }
int ck_has_avx512(void) { return cached_answer(&avx512_answer, probe_avx512); }
int ck_has_avx512_vnni(void) { return cached_answer(&vnni_answer, probe_avx512_vnni); }
#else
int ck_has_avx2(void) { return 0; }
int ck_has_avx512(void) { return 0; }
int ck_has_avx512_vnni(void) { return 0; }
int ck_has_amx(void) { return 0; }
#endif

/// 0: best available, 1: portable only, 2: at most AVX2, 3: at most AVX-512 (no AMX). The process setting
/// (CONTRAIL_ISA) can be overridden per thread, so a test comparing variants on its own thread never
/// changes the kernels that an engine running beside it uses.
static int isa_limit_value = 0;
static _Thread_local int thread_isa_limit = -1;
void ck_set_isa_limit(int limit) { __atomic_store_n(&isa_limit_value, limit, __ATOMIC_RELAXED); }
void ck_set_thread_isa_limit(int limit) { thread_isa_limit = limit; }
void ck_force_generic(int on) { ck_set_thread_isa_limit(on ? 1 : -1); }
#define isa_limit (thread_isa_limit >= 0 ? thread_isa_limit : __atomic_load_n(&isa_limit_value, __ATOMIC_RELAXED))
#define forced_generic (isa_limit == 1)
#define avx512_allowed (isa_limit == 0 || isa_limit == 3)

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
float ck_dot_q4_0_avx512(const uint8_t *row, const float *x, int64_t blocks);
float ck_dot_q4_1_avx512(const uint8_t *row, const float *x, int64_t blocks);
float ck_dot_q8_0_avx512(const uint8_t *row, const float *x, int64_t blocks);

/// The fused AVX2 dequantize-and-dot kernel of a type, or NULL when it has none.
typedef float (*fused_dot)(const uint8_t *, const float *, int64_t);
static fused_dot fused_kernel(int type) {
#if defined(__x86_64__)
    if (avx512_allowed && ck_has_avx512()) {
        switch (type) {
        case CK_Q4_0: return ck_dot_q4_0_avx512;
        case CK_Q4_1: return ck_dot_q4_1_avx512;
        case CK_Q8_0: return ck_dot_q8_0_avx512;
        default: break;
        }
    }
    switch (type) {
    case CK_Q4_0: return ck_dot_q4_0_avx2;
    case CK_Q4_1: return ck_dot_q4_1_avx2;
    case CK_Q5_0: return ck_dot_q5_0_avx2;
    case CK_Q8_0: return ck_dot_q8_0_avx2;
    default: return NULL;
    }
#else
    (void)type;
    return NULL;
#endif
}

int ck_matvec(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, float *y, int64_t row_begin,
              int64_t row_end) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) {
        const fused_dot fused = fused_kernel(type);
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

int ck_matmul_expand_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t cols, const float *x, int64_t x_stride,
                          float *y, int64_t y_stride, int64_t batch, int64_t row_begin, int64_t row_end, float *buf);

int ck_matmul_expand_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t cols, const float *x, int64_t x_stride,
                            float *y, int64_t y_stride, int64_t batch, int64_t row_begin, int64_t row_end, float *buf);

int ck_matmul(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, int64_t x_stride, float *y,
              int64_t y_stride, int64_t batch, int64_t row_begin, int64_t row_end) {
    const uint8_t *base = (const uint8_t *)w;
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) {
        // Expand each row once (SIMD), then register-blocked dot products. From two vectors on this beats
        // re-decoding a row per vector (SmolLM2 batch-4 decode 55 → ~125 tok/s); for one vector it is as
        // fast as the fused kernels (~40 tok/s either way, measured) and it keeps every batch size on the
        // same arithmetic: a sequence's logits are bit-identical alone or among others, so a seed
        // reproduces its sample exactly under continuous batching.
        const int wide = avx512_allowed && ck_has_avx512();
        const int64_t need = (wide ? 4 : 2) * cols;
        float stack[16384];
        float *buf = need <= 16384 ? stack : (float *)malloc((size_t)need * sizeof(float));
        if (buf == NULL) return -1;
        int rc = wide ? ck_matmul_expand_avx512(type, base, row_bytes, cols, x, x_stride, y, y_stride, batch, row_begin, row_end, buf)
                      : ck_matmul_expand_avx2(type, base, row_bytes, cols, x, x_stride, y, y_stride, batch, row_begin, row_end, buf);
        if (buf != stack) free(buf);
        return rc;
    }
#endif
    if (batch == 1) return ck_matvec(type, w, row_bytes, cols, x, y, row_begin, row_end);
    // Portable path: expand each row once, then dot it with every activation vector.
    float stack[4096];
    float *buf = cols <= 4096 ? stack : (float *)malloc((size_t)cols * sizeof(float));
    if (buf == NULL) return -1;
    int rc = 0;
    for (int64_t r = row_begin; r < row_end && rc == 0; r++) {
        rc = ck_dequantize(type, base + r * row_bytes, buf, cols);
        for (int64_t b = 0; b < batch && rc == 0; b++) {
            const float *xb = x + b * x_stride;
            float acc[8] = {0};
            int64_t c = 0;
            for (; c + 8 <= cols; c += 8)
                for (int k = 0; k < 8; k++) acc[k] += buf[c + k] * xb[c + k];
            float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
            for (; c < cols; c++) sum += buf[c] * xb[c];
            y[b * y_stride + r] = sum;
        }
    }
    if (buf != stack) free(buf);
    return rc;
}

void ck_quantize_q8_generic(const float *x, int64_t cols, void *out);
void ck_quantize_q8_avx2(const float *x, int64_t cols, void *out);
int ck_matmul_q8_generic(int type, const void *w, int64_t row_bytes, int64_t cols, const void *xq, int64_t xq_stride, float *y,
                         int64_t y_stride, int64_t batch, int parts, int64_t row_begin, int64_t row_end);
int ck_matmul_q8_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y,
                      int64_t y_stride, int64_t batch, int parts, int64_t row_begin, int64_t row_end);

void ck_quantize_q8(const float *x, int64_t cols, void *out) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) {
        ck_quantize_q8_avx2(x, cols, out);
        return;
    }
#endif
    ck_quantize_q8_generic(x, cols, out);
}

int ck_matmul_q8(int type, const void *w, int64_t row_bytes, int64_t cols, const void *xq, int64_t xq_stride, float *y,
                 int64_t y_stride, int64_t batch, int parts, int64_t row_begin, int64_t row_end) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2())
        return ck_matmul_q8_avx2(type, (const uint8_t *)w, row_bytes, cols, (const uint8_t *)xq, xq_stride, y, y_stride, batch, parts,
                                 row_begin, row_end);
#endif
    return ck_matmul_q8_generic(type, w, row_bytes, cols, xq, xq_stride, y, y_stride, batch, parts, row_begin, row_end);
}

int64_t ck_r8_size_avx2(int type, int64_t rows, int64_t cols);
int ck_r8_pack_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t cols, uint8_t *out);
int ck_matmul_r8_avx2(int type, const uint8_t *packed, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y, int64_t y_stride,
                      int64_t batch, int parts, int64_t row_begin, int64_t row_end);

int64_t ck_r8_size(int type, int64_t rows, int64_t cols) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) return ck_r8_size_avx2(type, rows, cols);
#endif
    (void)type, (void)rows, (void)cols;
    return -1;
}

int ck_r8_pack(int type, const void *w, int64_t row_bytes, int64_t rows, int64_t cols, void *out) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) return ck_r8_pack_avx2(type, (const uint8_t *)w, row_bytes, rows, cols, (uint8_t *)out);
#endif
    (void)type, (void)w, (void)row_bytes, (void)rows, (void)cols, (void)out;
    return -1;
}

int ck_matmul_r8_vnni(int type, const uint8_t *packed, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y, int64_t y_stride,
                      int64_t batch, int parts, int64_t row_begin, int64_t row_end);
int ck_matmul_r8_amx(int type, const uint8_t *packed, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y, int64_t y_stride,
                     int64_t batch, int parts, int64_t row_begin, int64_t row_end);

/// Below this many vectors (batch · parts) the AMX kernel's per-block tile store and 16-vector scaling
/// cost more than the VNNI kernel's per-vector work.
#define CK_AMX_MIN_VECTORS 8

// The packed layout exists only where AVX2 runs (ck_r8_size says -1 elsewhere), so even the portable
// setting keeps its AVX2 product; the variants give bit-identical results, so picking one by batch size
// never changes an answer.
int ck_matmul_r8(int type, const void *packed, int64_t cols, const void *xq, int64_t xq_stride, float *y, int64_t y_stride,
                 int64_t batch, int parts, int64_t row_begin, int64_t row_end) {
#if defined(__x86_64__)
    if (ck_has_avx2()) {
        const uint8_t *w = (const uint8_t *)packed, *x = (const uint8_t *)xq;
        if (isa_limit == 0 && batch * parts >= CK_AMX_MIN_VECTORS && type != CK_Q5_0 && ck_has_amx())
            return ck_matmul_r8_amx(type, w, cols, x, xq_stride, y, y_stride, batch, parts, row_begin, row_end);
        if (avx512_allowed && ck_has_avx512_vnni())
            return ck_matmul_r8_vnni(type, w, cols, x, xq_stride, y, y_stride, batch, parts, row_begin, row_end);
        return ck_matmul_r8_avx2(type, w, cols, x, xq_stride, y, y_stride, batch, parts, row_begin, row_end);
    }
#endif
    (void)type, (void)packed, (void)cols, (void)xq, (void)xq_stride, (void)y, (void)y_stride, (void)batch, (void)parts, (void)row_begin,
        (void)row_end;
    return -1;
}

/// ck_attention, and with `stats` its softmax's max and sum.
static void attention(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                      const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                      float *scores, float *out, float *stats) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) {
        if (ck_attention_simd_avx2(kv_type, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out,
                                   stats) == 0)
            return;
        ck_attention_avx2(kv_type, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out, stats);
        return;
    }
#endif
    ck_attention_generic(kv_type, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out, stats);
}

void ck_attention(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                  const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                  float *scores, float *out) {
    attention(kv_type, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out, NULL);
}

void ck_attention_part(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                       const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                       float *scores, float *out, float stats[2]) {
    attention(kv_type, q, keys, key_scales, values, value_scales, stride, span, head_dim, scale, softcap, scores, out, stats);
}

void ck_attention_merge(const float *outs, int64_t out_stride, const float *stats, int64_t parts, int64_t head_dim, float *out) {
    float top = -__builtin_inff();
    for (int64_t c = 0; c < parts; c++) top = fmaxf(top, stats[2 * c]);
    // Part c's softmax covers its positions with weights e^(s − m_c) / l_c; over the whole span they are
    // e^(s − top) / Σ l, so its output counts l_c·e^(m_c − top) / Σ_c l_c·e^(m_c − top).
    float total = 0;
    for (int64_t i = 0; i < head_dim; i++) out[i] = 0;
    for (int64_t c = 0; c < parts; c++) {
        const float w = stats[2 * c + 1] * expf(stats[2 * c] - top);
        total += w;
        for (int64_t i = 0; i < head_dim; i++) out[i] += w * outs[c * out_stride + i];
    }
    for (int64_t i = 0; i < head_dim; i++) out[i] /= total;
}

int ck_attention_causal_avx2(int kv_type, const float *q, int64_t q_stride, int64_t nq, int64_t pos0, int64_t window, const void *keys,
                             const float *key_scales, const void *values, const float *value_scales, int64_t stride, int64_t head_dim,
                             float scale, float softcap, float *scratch, float *out, int64_t out_stride);

void ck_attention_causal(int kv_type, const float *q, int64_t q_stride, int64_t nq, int64_t pos0, int64_t window, const void *keys,
                         const float *key_scales, const void *values, const float *value_scales, int64_t stride, int64_t head_dim,
                         float scale, float softcap, float *scratch, float *out, int64_t out_stride) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2() &&
        ck_attention_causal_avx2(kv_type, q, q_stride, nq, pos0, window, keys, key_scales, values, value_scales, stride, head_dim, scale,
                                 softcap, scratch, out, out_stride) == 0)
        return;
#endif
    // Query by query, each over its own span.
    const int64_t size = kv_type == CK_KV_BF16 ? 2 : kv_type == CK_KV_I8 ? 1 : 4;
    for (int64_t j = 0; j < nq; j++) {
        const int64_t p = pos0 + j, start = window > 0 && p + 1 > window ? p + 1 - window : 0;
        ck_attention(kv_type, q + j * q_stride, (const uint8_t *)keys + start * stride * size, key_scales ? key_scales + start : NULL,
                     (const uint8_t *)values + start * stride * size, value_scales ? value_scales + start : NULL, stride, p + 1 - start,
                     head_dim, scale, softcap, scratch, out + j * out_stride);
    }
}

// Stores are rare (one row per token and layer) and need no SIMD copy.
void ck_kv_store(int kv_type, const float *x, int64_t n, void *dst, float *scale) { ck_kv_store_generic(kv_type, x, n, dst, scale); }

void ck_gated_activation_avx2(int kind, float *gate, const float *up, int64_t n);

void ck_gated_activation(int kind, float *gate, const float *up, int64_t n) {
#if defined(__x86_64__)
    if (!forced_generic && ck_has_avx2()) {
        ck_gated_activation_avx2(kind, gate, up, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        const float x = gate[i];
        gate[i] = (kind == CK_ACT_GELU_TANH ? 0.5f * x * (1 + tanhf(0.7978845608f * (x + 0.044715f * x * x * x))) : x / (1 + expf(-x))) * up[i];
    }
}

uint64_t ck_read_sum(const void *p, int64_t bytes) {
    // Four independent sums keep enough loads in flight to saturate memory, not the adder.
    const uint64_t *w = (const uint64_t *)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    int64_t n = bytes / 8, i = 0;
    for (; i + 4 <= n; i += 4) a += w[i], b += w[i + 1], c += w[i + 2], d += w[i + 3];
    for (; i < n; i++) a += w[i];
    return a + b + c + d;
}
