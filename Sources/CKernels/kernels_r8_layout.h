// The eight-row packed layout's block sizes (described in kernels_x86_r8.c), for every kernel that reads it.
#include <stdint.h>
#include <stdlib.h>

/// Not a stored type: a Q5_0 group expanded to whole bytes (unsigned 0..31, after the same 32-byte header)
/// in scratch, for products that read each group once per four vectors.
#define CK_R8_Q5_0_BYTES 1005

/// Bytes of one packed block (eight rows × 32 values), or 0 for a type this layout does not cover.
static inline int64_t block8_bytes(int type) {
    switch (type) {
    case CK_R8_Q5_0_BYTES: return 32 + 256;
    case CK_Q4_0: case CK_Q4_1: return 32 + 128;
    case CK_Q5_0: return 32 + 128 + 32;
    case CK_Q8_0: return 16 + 256;
    case CK_Q4_K: return 64 + 128;
    case CK_Q6_K: return 64 + 256;
    default: return 0;
    }
}

/// Bytes before the values of a packed block (the scales, and the minimums or second scales).
static inline int64_t header_bytes(int type) { return type == CK_Q8_0 ? 16 : type == CK_Q4_K || type == CK_Q6_K ? 64 : 32; }


/// The types the layout covers: the kernels' per-type dispatch is generated from this list.
#define CK_R8_TYPES(X) X(CK_Q4_0) X(CK_Q4_1) X(CK_Q5_0) X(CK_Q8_0) X(CK_Q4_K) X(CK_Q6_K)

/// 1 when every packed-product kernel takes these arguments: a covered type, whole blocks, row ranges in
/// whole groups of eight, and parts 1 or 2.
static inline int r8_args_ok(int type, int64_t cols, int64_t row_begin, int64_t row_end, int parts) {
    return block8_bytes(type) != 0 && type != CK_R8_Q5_0_BYTES && cols % 32 == 0 && row_begin % 8 == 0 && row_end % 8 == 0 && (parts == 1 || parts == 2);
}
