// AVX2 products of int8 activations with weights repacked eight rows at a time (for --activations int8).
//
// The per-row kernel (kernels_x86_q8.c) spends most of its instructions on per-block scalar work: a block's
// f16 scale and minimum, a broadcast, a horizontal sum per row. Here rows 8G..8G+7 are interleaved so that
// each 32-bit lane of a register holds four consecutive values of one row: VPMADDUBSW against the
// activations' same four values broadcast to every lane, then VPMADDWD, leaves lane r = row r's sum. The
// eight rows' scales and minimums are one vector each, and the result needs no horizontal sum. A block of
// eight rows × 32 values takes ~50 instructions instead of ~160.
//
// Packed layout, per group of eight rows, per block of 32 values (block g of every row in the group):
//   8 f16 scales d (row order), then for the types with a minimum 8 f16 minimums m, then the values:
//   Q4_0/Q4_1: 4 × 32 bytes; byte 4r+i of register j holds value 4j+i of row r in its low nibble and value
//              4(j+4)+i in its high nibble (unsigned 0..15; Q4_0's offset is its minimum m = −8d).
//   Q5_0:      8 × 32 bytes, byte 4r+i of register c = value 4c+i of row r (unsigned 0..31, m = −16d).
//   Q8_0:      8 × 32 bytes likewise, signed.
//   Q4_K:      8 f32 scales d·sc and 8 f32 minimums −dmin·m of the sub-block (a product of an f16 and a 6-bit
//              integer needs more than f16's precision), then the nibbles as Q4_0's.
//   Q6_K:      8 f32 scales of values 0..15 and 8 of values 16..31, then 8 × 32 signed bytes as Q8_0's.
// The sizes equal the source's or exceed it a little (per 32 values: Q4_0 20 bytes instead of 18, Q5_0 36
// instead of 22, Q4_K 24 instead of 18, Q6_K 40 instead of 26.25).
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "kernels_x86.h"

/// Bytes of one packed block (eight rows × 32 values), or 0 for a type this layout does not cover.
static int64_t block8_bytes(int type) {
    switch (type) {
    case CK_Q4_0: case CK_Q4_1: return 32 + 128;
    case CK_Q5_0: return 32 + 256;
    case CK_Q8_0: return 16 + 256;
    case CK_Q4_K: return 64 + 128;
    case CK_Q6_K: return 64 + 256;
    default: return 0;
    }
}

/// Bytes before the values of a packed block (the scales, and the minimums or second scales).
static int64_t header_bytes(int type) { return type == CK_Q8_0 ? 16 : type == CK_Q4_K || type == CK_Q6_K ? 64 : 32; }

int64_t ck_r8_size_avx2(int type, int64_t rows, int64_t cols) {
    const int64_t b = block8_bytes(type);
    if (b == 0 || rows % 8 != 0 || cols % (type == CK_Q4_K || type == CK_Q6_K ? 256 : 32) != 0) return -1;
    return rows / 8 * (cols / 32) * b;
}

static inline uint16_t f32_to_f16(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

void ck_q8_unpack(int type, const uint8_t *row, int64_t g, int8_t q[32], float ws[2], float *m);

/// Block g (values 32g..32g+31) of a row as the packed layout holds it, from the portable block decoder:
/// integers, unsigned for the types with a minimum (Q4_0's and Q5_0's offsets 8 and 16 become the minimum
/// −8d / −16d, exact in f16: power-of-two multiples), and the header: scale and minimum (Q6_K: the
/// scales of values 0..15 and 16..31).
static void source_block(int type, const uint8_t *row, int64_t g, int8_t q[32], float f[2]) {
    float ws[2], m;
    ck_q8_unpack(type, row, g, q, ws, &m);
    const int offset = type == CK_Q4_0 ? 8 : type == CK_Q5_0 ? 16 : 0;
    for (int i = 0; i < 32; i++) q[i] = (int8_t)(q[i] + offset);
    f[0] = ws[0];
    f[1] = type == CK_Q6_K ? ws[1] : offset ? -(float)offset * ws[0] : m;
}

int ck_r8_pack_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t cols, uint8_t *out) {
    if (ck_r8_size_avx2(type, rows, cols) < 0) return -1;
    const int64_t groups = cols / 32, bytes = block8_bytes(type), header = header_bytes(type);
    const int wide = type == CK_Q4_K || type == CK_Q6_K, nibbles = type == CK_Q4_0 || type == CK_Q4_1 || type == CK_Q4_K;
    for (int64_t G = 0; G < rows / 8; G++) {
        for (int64_t g = 0; g < groups; g++) {
            uint8_t *o = out + (G * groups + g) * bytes, *values = o + header;
            for (int r = 0; r < 8; r++) {
                int8_t q[32];
                float f[2];
                source_block(type, w + (8 * G + r) * row_bytes, g, q, f);
                if (wide) {
                    memcpy(o + 4 * r, &f[0], 4);
                    memcpy(o + 32 + 4 * r, &f[1], 4);
                } else {
                    // f16 scales and minimums convert back exactly (they came from f16, or are ±2^k multiples).
                    const uint16_t h[2] = {f32_to_f16(f[0]), f32_to_f16(f[1])};
                    memcpy(o + 2 * r, &h[0], 2);
                    if (header == 32) memcpy(o + 16 + 2 * r, &h[1], 2);
                }
                for (int c = 0; c < 8; c++)
                    for (int i = 0; i < 4; i++) {
                        if (nibbles) {
                            uint8_t *byte = values + 32 * (c % 4) + 4 * r + i;
                            *byte = (uint8_t)(c < 4 ? (*byte & 0xF0) | (uint8_t)q[4 * c + i] : (*byte & 0x0F) | (uint8_t)(q[4 * c + i] << 4));
                        } else {
                            values[32 * c + 4 * r + i] = (uint8_t)q[4 * c + i];
                        }
                    }
            }
        }
    }
    return 0;
}

/// Four activation values (c = 0..7 of block g) in every 32-bit lane.
static inline __m256i x4(const int8_t *xq, int64_t g, int c) {
    int32_t v;
    memcpy(&v, xq + 32 * g + 4 * c, 4);
    return _mm256_set1_epi32(v);
}

/// One group of eight rows against V (1..4) vectors: lane r of acc[v] is row r's sum.
static inline __attribute__((always_inline)) void r8_group(const int type, const uint8_t *p, int64_t groups, const int8_t *const *xq_,
                                                          const float *const *xd_, const float *const *xs_, const int V, __m256 out[4]) {
    const int8_t *xq[4];
    const float *xd[4], *xs[4];
    for (int v = 0; v < V; v++) xq[v] = xq_[v], xd[v] = xd_[v], xs[v] = xs_[v];
    const int has_min = type != CK_Q8_0 && type != CK_Q6_K, wide = type == CK_Q4_K || type == CK_Q6_K;
    const int64_t bytes = block8_bytes(type), header = header_bytes(type);
    __m256 acc[4], macc[4];
    for (int v = 0; v < 4; v++) acc[v] = _mm256_setzero_ps(), macc[v] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(0x0F);
    for (int64_t g = 0; g < groups; g++, p += bytes) {
        // Q6_K: d scales values 0..15, m (its second scale) values 16..31.
        const __m256 d = wide ? _mm256_loadu_ps((const float *)p) : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        const __m256 m = wide ? _mm256_loadu_ps((const float *)(p + 32))
                         : has_min ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))) : _mm256_setzero_ps();
        const uint8_t *vals = p + header;
        __m256i w[8];
        if (type == CK_Q4_0 || type == CK_Q4_1 || type == CK_Q4_K) {
            for (int j = 0; j < 4; j++) {
                const __m256i b = _mm256_loadu_si256((const __m256i *)(vals + 32 * j));
                w[j] = _mm256_and_si256(b, low);
                w[j + 4] = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
            }
        } else {
            for (int c = 0; c < 8; c++) w[c] = _mm256_loadu_si256((const __m256i *)(vals + 32 * c));
        }
        for (int v = 0; v < V; v++) {
            __m256i sum;
            if (type == CK_Q6_K) {
                // Signed 6-bit values: pair sums ≤ 2·32·127, four fit in 16 bits; each half has its own scale.
                __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
                for (int c = 0; c < 4; c++) {
                    const __m256i xa = x4(xq[v], g, c), xb = x4(xq[v], g, c + 4);
                    a = _mm256_add_epi16(a, _mm256_maddubs_epi16(_mm256_abs_epi8(w[c]), _mm256_sign_epi8(xa, w[c])));
                    b = _mm256_add_epi16(b, _mm256_maddubs_epi16(_mm256_abs_epi8(w[c + 4]), _mm256_sign_epi8(xb, w[c + 4])));
                }
                const __m256 dx = _mm256_broadcast_ss(xd[v] + g);
                acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(a, ones)), _mm256_mul_ps(d, dx), acc[v]);
                acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(b, ones)), _mm256_mul_ps(m, dx), acc[v]);
                continue;
            }
            if (type == CK_Q4_0 || type == CK_Q4_1 || type == CK_Q4_K) {
                // Pair sums ≤ 2·15·127; eight of them still fit in 16 bits.
                __m256i s16 = _mm256_maddubs_epi16(w[0], x4(xq[v], g, 0));
                for (int c = 1; c < 8; c++) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[c], x4(xq[v], g, c)));
                sum = _mm256_madd_epi16(s16, ones);
            } else if (type == CK_Q5_0) {
                // Pair sums ≤ 2·31·127: four fit in 16 bits.
                __m256i a = _mm256_maddubs_epi16(w[0], x4(xq[v], g, 0)), b = _mm256_maddubs_epi16(w[4], x4(xq[v], g, 4));
                for (int c = 1; c < 4; c++) {
                    a = _mm256_add_epi16(a, _mm256_maddubs_epi16(w[c], x4(xq[v], g, c)));
                    b = _mm256_add_epi16(b, _mm256_maddubs_epi16(w[c + 4], x4(xq[v], g, c + 4)));
                }
                sum = _mm256_add_epi32(_mm256_madd_epi16(a, ones), _mm256_madd_epi16(b, ones));
            } else {
                // Signed weights: |w| times x with w's sign; each pair sum needs its own widening.
                sum = _mm256_setzero_si256();
                for (int c = 0; c < 8; c++) {
                    const __m256i x = x4(xq[v], g, c);
                    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w[c]), _mm256_sign_epi8(x, w[c])), ones));
                }
            }
            acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(d, _mm256_broadcast_ss(xd[v] + g)), acc[v]);
            if (has_min) macc[v] = _mm256_fmadd_ps(m, _mm256_broadcast_ss(xs[v] + g), macc[v]);
        }
    }
    for (int v = 0; v < V; v++) out[v] = _mm256_add_ps(acc[v], macc[v]);
}

static void r8_dispatch(int type, const uint8_t *p, int64_t groups, const int8_t *const *xq, const float *const *xd,
                        const float *const *xs, int V, __m256 out[4]) {
#define CK_R8(T)                                                                                                          \
    switch (V) {                                                                                                          \
    case 1: r8_group(T, p, groups, xq, xd, xs, 1, out); break;                                                            \
    case 2: r8_group(T, p, groups, xq, xd, xs, 2, out); break;                                                            \
    case 3: r8_group(T, p, groups, xq, xd, xs, 3, out); break;                                                            \
    default: r8_group(T, p, groups, xq, xd, xs, 4, out); break;                                                           \
    }
    switch (type) {
    case CK_Q4_0: CK_R8(CK_Q4_0) break;
    case CK_Q4_1: CK_R8(CK_Q4_1) break;
    case CK_Q5_0: CK_R8(CK_Q5_0) break;
    case CK_Q8_0: CK_R8(CK_Q8_0) break;
    case CK_Q4_K: CK_R8(CK_Q4_K) break;
    case CK_Q6_K: CK_R8(CK_Q6_K) break;
    default: break;
    }
#undef CK_R8
}

/// Rows [row_begin, row_end) (multiples of 8) of packed weights against `batch` quantized vectors, four at a
/// time per group of rows (the group's blocks come from L1 again for each four); with `parts` 2, (high,
/// residual) pairs whose results are added.
int ck_matmul_r8_avx2(int type, const uint8_t *packed, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y, int64_t y_stride,
                      int64_t batch, int parts, int64_t row_begin, int64_t row_end) {
    const int64_t bytes = block8_bytes(type);
    if (bytes == 0 || cols % 32 != 0 || row_begin % 8 != 0 || row_end % 8 != 0 || (parts != 1 && parts != 2)) return -1;
    const int64_t groups = cols / 32, group_bytes = groups * bytes, slots = batch * parts;
    const uint8_t *end = packed + row_end / 8 * group_bytes;
    __m256 out[4];
    for (int64_t G = row_begin / 8; G < row_end / 8; G++) {
        const uint8_t *p = packed + G * group_bytes;
        ck_prefetch_ahead(p, group_bytes, CK_PREFETCH_BYTES, end);
        for (int64_t b = 0; b < slots; b += 4) {
            const int V = slots - b < 4 ? (int)(slots - b) : 4;
            const int8_t *xv[4];
            const float *xd[4], *xs[4];
            ck_q8_vectors(xq, xq_stride, cols, b, V, xv, xd, xs);
            r8_dispatch(type, p, groups, xv, xd, xs, V, out);
            for (int v = 0; v < V; v += parts)
                _mm256_storeu_ps(y + (b + v) / parts * y_stride + 8 * G, parts == 2 ? _mm256_add_ps(out[v], out[v + 1]) : out[v]);
        }
    }
    return 0;
}

#pragma clang attribute pop
#endif
