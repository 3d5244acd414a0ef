// The eight-row packed layout's block sizes (described in kernels_x86_r8.c), for every kernel that reads it.
#include <stdint.h>

/// Bytes of one packed block (eight rows × 32 values), or 0 for a type this layout does not cover.
static inline int64_t block8_bytes(int type) {
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
static inline int64_t header_bytes(int type) { return type == CK_Q8_0 ? 16 : type == CK_Q4_K || type == CK_Q6_K ? 64 : 32; }

