#ifndef CONTRAIL_CKERNELS_H
#define CONTRAIL_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight element types, numbered as ggml numbers them (F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7,
/// Q8_0 8, Q4_K 12, Q5_K 13, Q6_K 14, I8 24, BF16 30).
enum { CK_F32 = 0, CK_F16 = 1, CK_Q4_0 = 2, CK_Q4_1 = 3, CK_Q5_0 = 6, CK_Q5_1 = 7, CK_Q8_0 = 8,
       CK_Q4_K = 12, CK_Q5_K = 13, CK_Q6_K = 14, CK_I8 = 24, CK_BF16 = 30 };

/// Dequantizes `n` values (whole blocks) of `type` at `src` into `dst`. Returns 0, or -1 for an unknown type.
int ck_dequantize(int type, const void *src, float *dst, int64_t n);

/// y[r] = Σ_c W[r][c]·x[c] for rows [row_begin, row_end) of a row-major weight of `type` whose rows are
/// `row_bytes` apart and `cols` long, read in place (blocks are expanded one at a time, never whole tensors).
int ck_matvec(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, float *y,
              int64_t row_begin, int64_t row_end);

/// Y[b][r] = Σ_c W[r][c]·X[b][c] for rows [row_begin, row_end) and `batch` activation vectors (X rows
/// `x_stride` floats apart, Y rows `y_stride` apart). Each weight row is read from memory once for the
/// whole batch: decoding many sequences costs little more than one.
int ck_matmul(int type, const void *w, int64_t row_bytes, int64_t cols, const float *x, int64_t x_stride, float *y,
              int64_t y_stride, int64_t batch, int64_t row_begin, int64_t row_end);

/// Activations quantized for integer matrix products (ck_matmul_q8), one vector of `cols` (a multiple of 32)
/// at a time into ck_q8_size(cols) bytes: the int8 values round(x/d), then per 32 values the f32 scale
/// d = max|x|/127, then per 32 values d·Σq (for weight formats with a per-block minimum).
int64_t ck_q8_size(int64_t cols);
void ck_quantize_q8(const float *x, int64_t cols, void *out);
/// x as two quantized vectors (each ck_q8_size bytes): `high` as ck_quantize_q8 gives it, and `residual`, what
/// high leaves out (at most half its step per value), quantized the same way: ~16 bits of precision, for
/// products with `parts` 2. Portable code on every CPU, so every ISA gets the same integers.
void ck_quantize_q8_split(const float *x, int64_t cols, void *high, void *residual);
/// 1 when ck_matmul_q8 covers weights of `type` with rows of `cols` (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K).
int ck_q8_supports(int type, int64_t cols);
/// ck_matmul against quantized vectors (`xq_stride` bytes apart): products of the weights' integers and the
/// activations' int8 values summed exactly per block, then scaled. Every (row, vector) pair gets the same
/// arithmetic for any batch. `parts`: 1, or 2 when each of the `batch` vectors is a (high, residual) pair of
/// quantized vectors (ck_quantize_q8_split) whose products are added. Returns -1 for a type it does not cover.
int ck_matmul_q8(int type, const void *w, int64_t row_bytes, int64_t cols, const void *xq, int64_t xq_stride, float *y,
                 int64_t y_stride, int64_t batch, int parts, int64_t row_begin, int64_t row_end);

/// Weights repacked eight rows at a time for ck_matmul_r8 (faster int8-activation products; x86 with AVX2 or more):
/// the packed size in bytes, or -1 when this CPU, type (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K) or shape (rows a
/// multiple of 8, cols whole blocks) is not covered — then ck_matmul_q8 on the original rows is the way.
int64_t ck_r8_size(int type, int64_t rows, int64_t cols);
int ck_r8_pack(int type, const void *w, int64_t row_bytes, int64_t rows, int64_t cols, void *out);
/// ck_matmul_q8 on packed weights, for rows [row_begin, row_end) in multiples of 8: AVX2, AVX-512 VNNI, or AMX
/// tiles for 8 or more vectors, all bit-identical, so the same arithmetic for every batch size. Returns -1 when it cannot run.
int ck_matmul_r8(int type, const void *packed, int64_t cols, const void *xq, int64_t xq_stride, float *y, int64_t y_stride,
                 int64_t batch, int parts, int64_t row_begin, int64_t row_end);

/// How a KV cache stores its rows: f32, bf16, or int8 with one f32 scale per row (per token).
enum { CK_KV_F32 = 0, CK_KV_BF16 = 1, CK_KV_I8 = 2 };

/// One query head's attention over `span` cached positions: s_t = q·k_t·scale (soft-capped to
/// softcap·tanh(s_t/softcap) when softcap > 0), p = softmax(s), out = Σ_t p_t·v_t. Key and value rows
/// are `stride` elements apart, stored as `kv_type` says (int8 rows times their `*_scales[t]`, which are
/// unused otherwise); `scores` is scratch for `span` floats. head_dim ≤ 512.
void ck_attention(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                  const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                  float *scores, float *out);

/// ck_attention over one piece of a span (its first row at `keys`/`values`), also giving its softmax's max
/// score and Σ e^(score − max) in `stats`: a long span's pieces can run on different threads (and a key
/// head's query heads one after another while its rows are cached), then ck_attention_merge joins them.
void ck_attention_part(int kv_type, const float *q, const void *keys, const float *key_scales, const void *values,
                       const float *value_scales, int64_t stride, int64_t span, int64_t head_dim, float scale, float softcap,
                       float *scores, float *out, float stats[2]);

/// The attention over a whole span from its `parts` pieces' outputs (`out_stride` apart) and stats, in order.
void ck_attention_merge(const float *outs, int64_t out_stride, const float *stats, int64_t parts, int64_t head_dim, float *out);

/// ck_attention for `nq` queries (`q_stride` apart) at consecutive positions pos0, pos0 + 1, … of one
/// cache (a prefill's block, its keys already stored): query j attends to positions up to pos0 + j, and
/// to at most `window` of them when window > 0. Keys and values start at position 0. Each key is read
/// once for the whole block; results do not depend on how a prompt's queries are split into blocks.
/// `scratch` holds nq·(pos0 + nq + 16) + 16·head_dim floats; outputs are `out_stride` apart.
void ck_attention_causal(int kv_type, const float *q, int64_t q_stride, int64_t nq, int64_t pos0, int64_t window, const void *keys,
                         const float *key_scales, const void *values, const float *value_scales, int64_t stride, int64_t head_dim,
                         float scale, float softcap, float *scratch, float *out, int64_t out_stride);

/// The sum of the 64-bit words of [p, p + bytes): a read of the memory the compiler cannot drop (measuring
/// the read bandwidth that bounds single-stream decode).
uint64_t ck_read_sum(const void *p, int64_t bytes);

/// The gated activations of a feed-forward layer.
enum { CK_ACT_SILU = 0, CK_ACT_GELU_TANH = 1 };

/// gate[i] = act(gate[i]) · up[i] for SiLU (x·σ(x), Llama) or tanh-approximated GELU (Gemma). Every element
/// gets the same arithmetic wherever a call's range starts or ends (results never depend on the split).
void ck_gated_activation(int kind, float *gate, const float *up, int64_t n);

/// Stores `n` f32 values as one cache row of `kv_type` at `dst`: copied, rounded to bf16 (nearest even),
/// or quantized to int8 with the row's scale (max |x| / 127) written to `*scale`.
void ck_kv_store(int kv_type, const float *x, int64_t n, void *dst, float *scale);

/// 1 when the AVX2/FMA/F16C kernels run on this CPU (they are used then).
int ck_has_avx2(void);
/// 1 when the AVX-512 kernels run on this CPU (they are preferred then).
int ck_has_avx512(void);
/// 1 when AVX-512 VNNI runs here (the packed int8 product then uses VPDPBUSD).
int ck_has_avx512_vnni(void);
/// 1 when AMX int8 tiles run here: the CPU has them, the OS granted this process tile state, and a
/// tile instruction ran (prefill and batched decode then use them for packed int8 products).
int ck_has_amx(void);
/// Process-wide (CONTRAIL_ISA): 0 uses the best kernels, 1 only the portable ones, 2 at most the AVX2 ones,
/// 3 at most the AVX-512 ones (no AMX).
void ck_set_isa_limit(int limit);
/// Tests: the same limit for calls on this thread only; -1 follows the process-wide setting again.
void ck_set_thread_isa_limit(int limit);
/// Tests: force the portable kernels on this thread (1) or follow the process-wide setting again (0).
void ck_force_generic(int on);

/// A spin-wait hint (PAUSE on x86): lets the sibling hyperthread run and saves power while spinning.
static inline void ck_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#ifdef __cplusplus
}
#endif

#endif
