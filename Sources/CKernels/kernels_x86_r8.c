// Weights repacked eight rows at a time for products with int8 activations (--activations int8), and the AVX2
// product on them (kernels_r8_impl.h; kernels_x86_vnni.c and kernels_x86_amx.c read the same layout).
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
//   Q5_0:      the low four bits as Q4_0's nibbles (unsigned 0..31, m = −16d), then 32 bytes of fifth bits:
//              bit c of byte 4r+i is the fifth bit of value 4c+i of row r (bits 0..3: register c's low
//              nibbles, bits 4..7: register c−4's high ones).
//   Q8_0:      8 × 32 bytes likewise, signed.
//   Q4_K:      8 f32 scales d·sc and 8 f32 minimums −dmin·m of the sub-block (a product of an f16 and a 6-bit
//              integer needs more than f16's precision), then the nibbles as Q4_0's.
//   Q6_K:      8 f32 scales of values 0..15 and 8 of values 16..31, then 8 × 32 signed bytes as Q8_0's.
// The sizes equal the source's or exceed it a little (per 32 values: Q4_0 20 bytes instead of 18, Q5_0 24
// instead of 22, Q4_K 24 instead of 18, Q6_K 40 instead of 26.25). Single-stream decode reads every
// packed byte once per token, so the layout's size is its speed there.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "kernels_x86.h"

#include "kernels_r8_layout.h"

int64_t ck_r8_size_avx2(int type, int64_t rows, int64_t cols) {
    const int64_t b = block8_bytes(type);
    if (b == 0 || type == CK_R8_Q5_0_BYTES || rows % 8 != 0 || cols % (type == CK_Q4_K || type == CK_Q6_K ? 256 : 32) != 0) return -1;
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
    const int wide = type == CK_Q4_K || type == CK_Q6_K, nibbles = type == CK_Q4_0 || type == CK_Q4_1 || type == CK_Q4_K || type == CK_Q5_0;
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
                            const uint8_t v = (uint8_t)q[4 * c + i], low4 = v & 0x0F;
                            uint8_t *byte = values + 32 * (c % 4) + 4 * r + i;
                            *byte = (uint8_t)(c < 4 ? (*byte & 0xF0) | low4 : (*byte & 0x0F) | (uint8_t)(low4 << 4));
                            if (type == CK_Q5_0) {
                                uint8_t *fifth = values + 128 + 4 * r + i;
                                *fifth = (uint8_t)((*fifth & ~(1u << c)) | (uint8_t)((v >> 4) << c));
                            }
                        } else {
                            values[32 * c + 4 * r + i] = (uint8_t)q[4 * c + i];
                        }
                    }
            }
        }
    }
    return 0;
}

#define CK_R8_SUFFIX avx2
#define CK_R8_VNNI 0
#include "kernels_r8_impl.h"

#pragma clang attribute pop
#endif
