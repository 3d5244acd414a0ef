// Helpers shared by the x86 kernel files; include inside a `#pragma clang attribute push(target(…f16c…))`
// region so they compile for that instruction set.
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/// The f16 block scale at `p`, as f32 (one F16C instruction).
static inline float ck_h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}
