// AVX2/FMA/F16C kernels: SIMD row expansion and the expand-once matmul the engine uses (on CPUs without
// AVX-512), and fused dequantize-and-dot kernels for the 32-element block types (Q4_0, Q4_1, Q5_0, Q8_0)
// behind ck_matvec. All checked against the portable kernels in the tests.
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "kernels_x86.h"

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
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ck_h2f(row)), dot_nibbles(row + 4, x, zero), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ck_h2f(row + 2)), sum32(x), acc);
    }
    return hsum(acc);
}

float ck_dot_q4_0_avx2(const uint8_t *row, const float *x, int64_t blocks) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i eight = _mm256_set1_epi32(8);
    for (int64_t b = 0; b < blocks; b++, row += 18, x += 32)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ck_h2f(row)), dot_nibbles(row + 2, x, eight), acc);
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
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ck_h2f(row)), dot_i8x32(q0, q1, x), acc);
    }
    return hsum(acc);
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
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ck_h2f(row)),
                              dot_i8x32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1), x), acc);
    }
    return hsum(acc);
}

// Row expansion, one group of 32 values at a time: `group_<type>(row, b, j, st, out)` gives group j of block
// b (values 32j..32j+31 of the block; j is 0 for 32-value blocks) as four vectors of eight. The row expansion
// stores exactly these and the fused kernels multiply them in registers, so both paths compute the same
// numbers. Both run j = 0..7 of a K-quant super-block as an unrolled loop (j constant in each copy), and
// `st` carries what its groups share (their scales, decoded at j = 0).
typedef struct {
    // Q4_K: d·scale of sub-blocks 0..7, then −dmin·min; Q6_K: d·scale of its 16 sub-blocks. Read back by
    // broadcast loads, which take no vector ALU slot.
    float s[16];
} group_state;
typedef void (*group_fn)(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]);

/// Masks for _mm256_shuffle_epi8 that spread bytes 0..7 (k = 0) or 8..15 (k = 1) of a 128-bit lane held in
/// both lanes into the low bytes of eight 32-bit lanes (bytes 0..3 low lane, 4..7 high), the rest zero.
/// One in-lane shuffle per eight values: VPMOVZXBD from a 128-bit register costs Zen 3 three times as much.
static inline __m256i spread_mask(int k) {
    const char o = (char)(8 * k), z = (char)0x80;
    return _mm256_setr_epi8(o, z, z, z, o + 1, z, z, z, o + 2, z, z, z, o + 3, z, z, z,
                            o + 4, z, z, z, o + 5, z, z, z, o + 6, z, z, z, o + 7, z, z, z);
}

/// 32 unsigned bytes, 0..15 in `a` and 16..31 in `b` (each held in both lanes) → q·s + c, with (s0, c0) for
/// values 0..15 and (s1, c1) for 16..31. One rounding each (FMA); q converts to f32 exactly.
static inline void u8x32(__m256i a, __m256i b, __m256 s0, __m256 c0, __m256 s1, __m256 c1, __m256 out[4]) {
    const __m256i m0 = spread_mask(0), m1 = spread_mask(1);
    out[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(a, m0)), s0, c0);
    out[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(a, m1)), s0, c0);
    out[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(b, m0)), s1, c1);
    out[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(b, m1)), s1, c1);
}

/// 16 bytes at `p` in both 128-bit lanes (a load-port broadcast).
static inline __m256i bcast16(const uint8_t *p) { return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p)); }

/// A 32-byte register's halves (values 0..15 and 16..31), each in both lanes, as u8x32 takes them.
static inline __m256i low_half(__m256i v) { return _mm256_permute4x64_epi64(v, 0x44); }
static inline __m256i high_half(__m256i v) { return _mm256_permute4x64_epi64(v, 0xEE); }

/// 32 nibbles (low ones are elements 0..15, high ones 16..31) → q·d + m.
static inline void nibbles(const uint8_t *qs, __m256 d, __m256 m, __m256 out[4]) {
    const __m256i q = bcast16(qs), mask = _mm256_set1_epi8(0x0F);
    u8x32(_mm256_and_si256(q, mask), _mm256_and_si256(_mm256_srli_epi16(q, 4), mask), d, m, d, m, out);
}

/// A signed value q with bias b as the unsigned q + b: fma(q + b, s, −b·s) is q·s rounded once, as a plain
/// product would round it (b is a power of two, so −b·s is exact).
static inline __m256 bias_for(__m256 s, float b) { return _mm256_mul_ps(s, _mm256_set1_ps(-b)); }

static inline void group_q4_0(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    (void)j, (void)st;
    const uint8_t *w = row + b * 18;
    const __m256 d = _mm256_set1_ps(ck_h2f(w));
    nibbles(w + 2, d, bias_for(d, 8), out);
}

static inline void group_q4_1(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    (void)j, (void)st;
    const uint8_t *w = row + b * 20;
    // d and m side by side: one conversion of four copies of the pair, then each spread to all lanes.
    int32_t dm;
    memcpy(&dm, w, 4);
    const __m256 both = _mm256_cvtph_ps(_mm_set1_epi32(dm));
    nibbles(w + 4, _mm256_permute_ps(both, 0x00), _mm256_permute_ps(both, 0x55), out);
}

static inline void group_q8_0(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    (void)j, (void)st;
    const uint8_t *w = row + b * 34;
    const __m256 d = _mm256_set1_ps(ck_h2f(w)), c = bias_for(d, 128);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    u8x32(_mm256_xor_si256(bcast16(w + 2), flip), _mm256_xor_si256(bcast16(w + 18), flip), d, c, d, c, out);
}

static inline void group_q5_0(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    (void)j, (void)st;
    const uint8_t *w = row + b * 22;
    const __m256 d = _mm256_set1_ps(ck_h2f(w)), c = bias_for(d, 16);
    uint32_t h;
    memcpy(&h, w + 2, 4);
    // Values 0..15 (low nibbles) and 16..31 (high), each in both lanes with their fifth bits (qh bytes 0-1
    // and 2-3) merged in: two bit expansions cost less than moving one 32-byte expansion across lanes.
    const __m256i qh = _mm256_set1_epi32((int)h);
    const __m256i q = bcast16(w + 6), mask = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, mask), fifth_bits_of(qh, _mm256_set_epi64x(0x0101010101010101, 0, 0x0101010101010101, 0)));
    const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), mask),
                                       fifth_bits_of(qh, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0303030303030303, 0x0202020202020202)));
    u8x32(lo, hi, d, c, d, c, out);
}

/// Q4_K super-blocks (256 values, 144 bytes) hold eight sub-blocks of 32 with their own scale and min;
/// sub-blocks 2p and 2p+1 are the low and high nibbles of the same 32 bytes. At a super-block's first group
/// `st` takes all eight d·scale and −dmin·min (the 6-bit fields decoded once, not per group).
static inline void group_q4_K(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    const uint8_t *w = row + b * 144;
    if (j == 0) {
        float sc[8], mn[8];
        for (int k = 0; k < 8; k++) k4_scale_min(k, w + 4, &sc[k], &mn[k]);
        _mm256_storeu_ps(st->s, _mm256_mul_ps(_mm256_set1_ps(ck_h2f(w)), _mm256_loadu_ps(sc)));
        _mm256_storeu_ps(st->s + 8, _mm256_mul_ps(_mm256_set1_ps(-ck_h2f(w + 2)), _mm256_loadu_ps(mn)));
    }
    const __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * (j / 2))), mask = _mm256_set1_epi8(0x0F);
    const __m256i v = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(bytes, 4) : bytes, mask);
    const __m256 s = _mm256_broadcast_ss(st->s + j), c = _mm256_broadcast_ss(st->s + 8 + j);
    u8x32(low_half(v), high_half(v), s, c, s, c, out);
}

/// Q6_K super-blocks (256 values, 210 bytes): low 4 bits in ql, high 2 bits in qh, 16 int8 scales, in two
/// halves of 128; group i of a half takes its bits from these bytes and shifts. At a super-block's first
/// group `st` takes its sixteen d·scale.
static inline void group_q6_K(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    const uint8_t *w = row + b * 210;
    if (j == 0) {
        const __m256 d = _mm256_set1_ps(ck_h2f(w + 208));
        const __m128i sc = _mm_loadu_si128((const __m128i *)(w + 192));
        _mm256_storeu_ps(st->s, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
        _mm256_storeu_ps(st->s + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
    }
    const int half = j / 4, i = j % 4;  // group i of its half
    const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
    const __m256i l = _mm256_loadu_si256((const __m256i *)(w + 64 * half + 32 * (i & 1)));
    const __m256i h = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * half));
    // Shifts within 16-bit lanes pull neighbouring bits in; the masks after them drop those.
    const __m256i lo = _mm256_and_si256(i < 2 ? l : _mm256_srli_epi16(l, 4), low4);
    const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * i), low2), 4);
    const __m256i v = _mm256_or_si256(lo, hi);  // q + 32, 0..63
    // Elements 0..15 use scale 2i of the half, 16..31 scale 2i+1 (as d·scale, then ·q).
    const __m256 s0 = _mm256_broadcast_ss(st->s + 8 * half + 2 * i), s1 = _mm256_broadcast_ss(st->s + 8 * half + 2 * i + 1);
    u8x32(low_half(v), high_half(v), s0, bias_for(s0, 32), s1, bias_for(s1, 32), out);
}

static inline void group_f32(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    (void)j, (void)st;
    const float *w = (const float *)row + 32 * b;
    for (int k = 0; k < 4; k++) out[k] = _mm256_loadu_ps(w + 8 * k);
}

static inline void group_f16(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    (void)j, (void)st;
    const uint8_t *w = row + 64 * b;
    for (int k = 0; k < 4; k++) out[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 16 * k)));
}

static inline void group_bf16(const uint8_t *row, int64_t b, int j, group_state *st, __m256 out[4]) {
    (void)j, (void)st;
    const uint8_t *w = row + 64 * b;
    for (int k = 0; k < 4; k++)
        out[k] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 16 * k))), 16));
}

/// The types with a group function: X(type, function, values per block). The lookup, the row expansion and
/// the fused kernels are all generated from this one list.
#define CK_GROUP_TYPES(X)                                                                                                 \
    X(CK_F32, group_f32, 32) X(CK_F16, group_f16, 32) X(CK_BF16, group_bf16, 32) X(CK_Q4_0, group_q4_0, 32)            \
    X(CK_Q4_1, group_q4_1, 32) X(CK_Q5_0, group_q5_0, 32) X(CK_Q8_0, group_q8_0, 32) X(CK_Q4_K, group_q4_K, 256)        \
    X(CK_Q6_K, group_q6_K, 256)

/// The group function of `type`, or NULL (rows must also be whole blocks).
static group_fn group_kernel(int type, int64_t cols) {
#define CK_LOOKUP(t, fn, block) case t: return cols % block == 0 ? fn : NULL;
    switch (type) { CK_GROUP_TYPES(CK_LOOKUP) default: return NULL; }
#undef CK_LOOKUP
}

/// Stores `blocks` blocks of `per` groups of a row; inlined per type (an indirect call per 32 values costs as
/// much as them).
static inline __attribute__((always_inline)) void expand_groups(group_fn fn, const int per, const uint8_t *w, float *y, int64_t blocks) {
    __m256 v[4];
    group_state st;
    for (int64_t b = 0; b < blocks; b++)
        for (int j = 0; j < per; j++, y += 32) {
            fn(w, b, j, &st, v);
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 8 * k, v[k]);
        }
}

/// Expands one row to f32 with SIMD (the scalar ck_dequantize costs as much as the matrix product it feeds
/// for batched decode). Returns -1 for types it does not cover.
int ck_dequantize_row_avx2(int type, const uint8_t *w, float *y, int64_t cols) {
    if (group_kernel(type, cols) == NULL) return -1;
#define CK_EXPAND(t, fn, block) case t: expand_groups(fn, block / 32, w, y, cols / block); break;
    switch (type) { CK_GROUP_TYPES(CK_EXPAND) }
#undef CK_EXPAND
    return 0;
}

int ck_expand_row(int type, const uint8_t *w, float *y, int64_t cols) {
    return ck_dequantize_row_avx2(type, w, y, cols) == 0 ? 0 : ck_dequantize(type, w, y, cols);
}

/// One or two rows against `V` (1..3) vectors with the rows expanded in registers, group by group: the
/// same values and the same FMA order per (row, vector) as expanding the row and running dot1/dot2x4,
/// without writing the row out and reading it back (that round trip cost as much as the products for a
/// single vector). Inlined per type and per V so the group function and loops are specialised.
static inline __attribute__((always_inline)) void fused_rows(group_fn fn, const int per, const uint8_t *w0, const uint8_t *w1,
                                                            const float *const *x, const int V, int64_t blocks, float out[2][3]) {
    __m256 acc[2][3];
    for (int r = 0; r < 2; r++)
        for (int v = 0; v < 3; v++) acc[r][v] = _mm256_setzero_ps();
    __m256 e0[4], e1[4];
    group_state s0, s1;
    for (int64_t b = 0; b < blocks; b++)
        for (int j = 0; j < per; j++) {
            fn(w0, b, j, &s0, e0);
            if (w1) fn(w1, b, j, &s1, e1);
            const int64_t at = 32 * (b * per + j);
            for (int k = 0; k < 4; k++) {
                for (int v = 0; v < V; v++) {
                    const __m256 xv = _mm256_loadu_ps(x[v] + at + 8 * k);
                    acc[0][v] = _mm256_fmadd_ps(e0[k], xv, acc[0][v]);
                    if (w1) acc[1][v] = _mm256_fmadd_ps(e1[k], xv, acc[1][v]);
                }
            }
        }
    for (int v = 0; v < V; v++) out[0][v] = hsum(acc[0][v]), out[1][v] = hsum(acc[1][v]);
}

/// `fused_rows` specialised by type and V; `w1` may be NULL (one row).
static void fused_dispatch(int type, const uint8_t *w0, const uint8_t *w1, const float *const *x, int V, int64_t cols, float out[2][3]) {
#define CK_FUSED_1(t, fn, block) case t: fused_rows(fn, block / 32, w0, w1, x, 1, cols / block, out); break;
#define CK_FUSED_2(t, fn, block) case t: fused_rows(fn, block / 32, w0, w1, x, 2, cols / block, out); break;
#define CK_FUSED_3(t, fn, block) case t: fused_rows(fn, block / 32, w0, w1, x, 3, cols / block, out); break;
    if (V == 1) {
        switch (type) { CK_GROUP_TYPES(CK_FUSED_1) }
    } else if (V == 2) {
        switch (type) { CK_GROUP_TYPES(CK_FUSED_2) }
    } else {
        switch (type) { CK_GROUP_TYPES(CK_FUSED_3) }
    }
#undef CK_FUSED_1
#undef CK_FUSED_2
#undef CK_FUSED_3
}

/// Two expanded rows against four activation vectors: 8 accumulators, 6 loads per 8 FMAs (a 2×4
/// register block), so the loop is bound by FMA throughput rather than loads.
static inline void dot2x4(const float *w0, const float *w1, const float *const x[4], int64_t n, float out[2][4]) {
    __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a02 = _mm256_setzero_ps(), a03 = _mm256_setzero_ps();
    __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps(), a12 = _mm256_setzero_ps(), a13 = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        const __m256 r0 = _mm256_loadu_ps(w0 + c), r1 = _mm256_loadu_ps(w1 + c);
        __m256 v = _mm256_loadu_ps(x[0] + c);
        a00 = _mm256_fmadd_ps(r0, v, a00), a10 = _mm256_fmadd_ps(r1, v, a10);
        v = _mm256_loadu_ps(x[1] + c);
        a01 = _mm256_fmadd_ps(r0, v, a01), a11 = _mm256_fmadd_ps(r1, v, a11);
        v = _mm256_loadu_ps(x[2] + c);
        a02 = _mm256_fmadd_ps(r0, v, a02), a12 = _mm256_fmadd_ps(r1, v, a12);
        v = _mm256_loadu_ps(x[3] + c);
        a03 = _mm256_fmadd_ps(r0, v, a03), a13 = _mm256_fmadd_ps(r1, v, a13);
    }
    out[0][0] = hsum(a00), out[0][1] = hsum(a01), out[0][2] = hsum(a02), out[0][3] = hsum(a03);
    out[1][0] = hsum(a10), out[1][1] = hsum(a11), out[1][2] = hsum(a12), out[1][3] = hsum(a13);
    for (; c < n; c++)
        for (int k = 0; k < 4; k++) out[0][k] += w0[c] * x[k][c], out[1][k] += w1[c] * x[k][c];
}

static inline float dot1(const float *row, const float *x, int64_t n) {
    __m256 a = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(x + c), a);
    float sum = hsum(a);
    for (; c < n; c++) sum += row[c] * x[c];
    return sum;
}

/// Any batch (decode slots, prefill chunks), two weight rows at a time: for one to three vectors the rows
/// are expanded in registers (fused_rows); for more, into `buf` (2 × cols floats) and multiplied with the
/// vectors four at a time. Both give every (row, vector) pair the same arithmetic.
int ck_matmul_expand_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t cols, const float *x, int64_t x_stride,
                          float *y, int64_t y_stride, int64_t batch, int64_t row_begin, int64_t row_end, float *buf) {
    const uint8_t *end = w + row_end * row_bytes;
    if (batch <= 3 && group_kernel(type, cols) != NULL) {
        // Few vectors: rows expanded in registers, two at a time (see fused_rows).
        const float *xs[3] = {x, x + x_stride, x + 2 * x_stride};
        float out[2][3];
        for (int64_t r = row_begin; r < row_end; r += 2) {
            const int pair = r + 1 < row_end;
            ck_prefetch_ahead(w + r * row_bytes, (pair ? 2 : 1) * row_bytes, CK_PREFETCH_BYTES, end);
            fused_dispatch(type, w + r * row_bytes, pair ? w + (r + 1) * row_bytes : NULL, xs, (int)batch, cols, out);
            for (int64_t b = 0; b < batch; b++) {
                y[b * y_stride + r] = out[0][b];
                if (pair) y[b * y_stride + r + 1] = out[1][b];
            }
        }
        return 0;
    }
    float *b0 = buf, *b1 = buf + cols;
    for (int64_t r = row_begin; r < row_end; r += 2) {
        const int pair = r + 1 < row_end;
        ck_prefetch_ahead(w + r * row_bytes, (pair ? 2 : 1) * row_bytes, CK_PREFETCH_BYTES, end);
        if (ck_expand_row(type, w + r * row_bytes, b0, cols) != 0) return -1;
        if (pair && ck_expand_row(type, w + (r + 1) * row_bytes, b1, cols) != 0) return -1;
        int64_t b = 0;
        if (pair) {
            float out[2][4];
            for (; b + 4 <= batch; b += 4) {
                const float *const xs[4] = {x + b * x_stride, x + (b + 1) * x_stride, x + (b + 2) * x_stride, x + (b + 3) * x_stride};
                dot2x4(b0, b1, xs, cols, out);
                for (int k = 0; k < 4; k++) y[(b + k) * y_stride + r] = out[0][k], y[(b + k) * y_stride + r + 1] = out[1][k];
            }
        }
        for (; b < batch; b++) {
            y[b * y_stride + r] = dot1(b0, x + b * x_stride, cols);
            if (pair) y[b * y_stride + r + 1] = dot1(b1, x + b * x_stride, cols);
        }
    }
    return 0;
}

/// One gated activation step for eight values: x / (1 + e^(−k)) · up, with k = x (SiLU) or 2·√(2/π)·(x +
/// 0.044715x³) (tanh-approximated GELU: 0.5x(1 + tanh u) = x / (1 + e^(−2u)), which has no cancellation
/// near 0 where 1 + tanh u does not).
static inline __m256 gated8(const int kind, __m256 x, __m256 up) {
    __m256 k = x;
    if (kind == CK_ACT_GELU_TANH) {
        const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        k = _mm256_mul_ps(_mm256_set1_ps(2 * 0.7978845608f), _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715f), x));
    }
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), k));
    return _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1), e)), up);
}

static inline __attribute__((always_inline)) void gated(const int kind, float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(gate + i, gated8(kind, _mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) {
        // The tail through the same eight-wide formula, so a value's result never depends on where a
        // thread's piece of the vector ends.
        float g[8] = {0}, u[8] = {0};
        memcpy(g, gate + i, (size_t)(n - i) * 4);
        memcpy(u, up + i, (size_t)(n - i) * 4);
        _mm256_storeu_ps(g, gated8(kind, _mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        memcpy(gate + i, g, (size_t)(n - i) * 4);
    }
}

void ck_gated_activation_avx2(int kind, float *gate, const float *up, int64_t n) {
    if (kind == CK_ACT_GELU_TANH)
        gated(CK_ACT_GELU_TANH, gate, up, n);
    else
        gated(CK_ACT_SILU, gate, up, n);
}

#pragma clang attribute pop
#endif
