// The same kernels compiled for AVX2 + FMA + F16C (selected at run time by ck_has_avx2).
#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define CK_SUFFIX avx2
#include "kernels_impl.h"
#pragma clang attribute pop
#endif
