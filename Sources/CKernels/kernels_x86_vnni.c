// The eight-row packed int8 product (kernels_r8_impl.h) for CPUs with AVX-512 VNNI: VPDPBUSD adds four byte
// products into each 32-bit lane in one instruction, where AVX2 needs VPMADDUBSW, a 16-bit add and
// VPMADDWD. The registers stay 256 bits wide so the float arithmetic, and so every result, equals AVX2's.
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni"))), apply_to = function)

#include "kernels_x86.h"
#include "kernels_r8_layout.h"

#define CK_R8_SUFFIX vnni
#define CK_R8_VNNI 1
#include "kernels_r8_impl.h"

#pragma clang attribute pop
#endif
