// AMX tiles for the eight-row packed int8 product (layout: kernels_x86_r8.c) when many vectors share the
// weights: prefill and batched decode. One TDPBSUD (signed activations × unsigned weights; TDPBSSD for
// Q8_0/Q6_K's signed ones) multiplies up to 16 vectors by a block of eight rows × 32 values. The
// packed block is already the B tile (32-byte tile row c = values 4c..4c+3 of the eight rows; nibble types
// are split into bytes first), and each vector's 32 int8 values are an A tile row read in place. Block
// scales differ per block, so each block's 16×8 integer tile is stored and scaled with AVX-512, in the
// same float operations, in the same order, as the AVX2 kernel: the results are bit-identical to it.
//
// Linux keeps tile state off until a process asks (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA), and
// some VMs advertise AMX in CPUID without running it, so ck_has_amx asks, then runs one tile instruction
// under a SIGILL/SIGSEGV guard before saying yes.
#if defined(__x86_64__)
#include <immintrin.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "CKernels.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,amx-tile,amx-int8"))), apply_to = function)

#include "kernels_x86.h"
#include "kernels_r8_layout.h"

/// LDTILECFG's 64-byte operand (palette 1).
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/// Tile registers: A/B/C for a whole block; Q6_K's two half blocks (own scales) use the other five.
enum { TA = 0, TB = 1, TC = 2, TA_LO = 3, TA_HI = 4, TB_LO = 5, TB_HI = 6, TC_HI = 7 };

/// Tiles for m (1..16) vectors: A m×32 bytes (K = 32), B 8 rows × 32 bytes (K/4 × eight rows' four bytes),
/// C m × eight int32; the half-block tiles have K = 16.
static void configure(int m) {
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    c.rows[TA] = (uint8_t)m, c.colsb[TA] = 32;
    c.rows[TB] = 8, c.colsb[TB] = 32;
    c.rows[TC] = (uint8_t)m, c.colsb[TC] = 32;
    c.rows[TA_LO] = c.rows[TA_HI] = (uint8_t)m, c.colsb[TA_LO] = c.colsb[TA_HI] = 16;
    c.rows[TB_LO] = c.rows[TB_HI] = 4, c.colsb[TB_LO] = c.colsb[TB_HI] = 32;
    c.rows[TC_HI] = (uint8_t)m, c.colsb[TC_HI] = 32;
    _tile_loadconfig(&c);
}

static sigjmp_buf probe_jump;
static void probe_fault(int sig) {
    (void)sig;
    siglongjmp(probe_jump, 1);
}

/// One tile instruction, run under a guard: 1 when it ran.
static int probe_tiles(void) {
    struct sigaction fault, old_ill, old_segv;
    memset(&fault, 0, sizeof fault);
    fault.sa_handler = probe_fault;
    sigemptyset(&fault.sa_mask);
    sigaction(SIGILL, &fault, &old_ill);
    sigaction(SIGSEGV, &fault, &old_segv);
    int ran = 0;
    if (sigsetjmp(probe_jump, 1) == 0) {
        configure(1);
        _tile_zero(TC);
        _tile_release();
        ran = 1;
    }
    sigaction(SIGILL, &old_ill, NULL);
    sigaction(SIGSEGV, &old_segv, NULL);
    return ran;
}

int ck_has_amx(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (v >= 0) return v;
    static int lock = 0;
    while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE)) ck_cpu_relax();
    v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = ck_has_avx512() && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8");
        // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS manages tile state.
        if (v) v = (_xgetbv(0) & (3ull << 17)) == (3ull << 17);
        // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): per process, granted once.
        if (v) v = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
        if (v) v = probe_tiles();
        __atomic_store_n(&cached, v, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
    return v;
}

/// [v, v] (AVX-512F alone: the f32x8 forms need AVX-512DQ).
static inline __m512 twice(__m256 v) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(v)), _mm256_castps_pd(v), 1));
}

/// 16 vectors' products with one group of eight rows: lanes 0..7 of acc[t] are vector 2t's eight rows,
/// lanes 8..15 vector 2t+1's. `dx`/`xs` hold, per block, the 16 vectors' scales and scaled sums.
static inline __attribute__((always_inline)) void amx_group(const int type, const uint8_t *p, int64_t groups, const uint8_t *xq,
                                                           int64_t stride, const float *dx, const float *xs, int32_t *cbuf, __m512 out[8]) {
    const int has_min = type != CK_Q8_0 && type != CK_Q6_K, wide = type == CK_Q4_K || type == CK_Q6_K;
    const int nibbles = type == CK_Q4_0 || type == CK_Q4_1 || type == CK_Q4_K;
    const int64_t bytes = block8_bytes(type), header = header_bytes(type);
    __m512 acc[8], macc[8];
    __m512i pair[8];
    for (int t = 0; t < 8; t++) {
        acc[t] = macc[t] = _mm512_setzero_ps();
        pair[t] = _mm512_inserti64x4(_mm512_set1_epi32(2 * t), _mm256_set1_epi32(2 * t + 1), 1);
    }
    __attribute__((aligned(64))) uint8_t split[256];
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int64_t g = 0; g < groups; g++, p += bytes) {
        const __m256 d8 = wide ? _mm256_loadu_ps((const float *)p) : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        const __m256 m8 = wide ? _mm256_loadu_ps((const float *)(p + 32))
                          : has_min ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))) : _mm256_setzero_ps();
        const __m512 d = twice(d8), m = twice(m8);
        const uint8_t *vals = p + header, *a = xq + 32 * g;
        const __m512 dxg = _mm512_loadu_ps(dx + 16 * g);
        if (type == CK_Q6_K) {
            _tile_zero(TC);
            _tile_zero(TC_HI);
            _tile_loadd(TA_LO, a, stride);
            _tile_loadd(TA_HI, a + 16, stride);
            _tile_loadd(TB_LO, vals, 32);
            _tile_loadd(TB_HI, vals + 128, 32);
            _tile_dpbssd(TC, TA_LO, TB_LO);
            _tile_dpbssd(TC_HI, TA_HI, TB_HI);
            _tile_stored(TC, cbuf, 32);
            _tile_stored(TC_HI, cbuf + 128, 32);
            for (int t = 0; t < 8; t++) {
                const __m512 x = _mm512_permutexvar_ps(pair[t], dxg);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cbuf + 16 * t)), _mm512_mul_ps(d, x), acc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cbuf + 128 + 16 * t)), _mm512_mul_ps(m, x), acc[t]);
            }
            continue;
        }
        const uint8_t *b = vals;
        if (nibbles) {
            // Registers 0..3's low nibbles are tile rows 0..3, their high nibbles rows 4..7.
            const __m512i lo = _mm512_loadu_si512(vals), hi = _mm512_loadu_si512(vals + 64);
            _mm512_store_si512(split, _mm512_and_si512(lo, low));
            _mm512_store_si512(split + 64, _mm512_and_si512(hi, low));
            _mm512_store_si512(split + 128, _mm512_and_si512(_mm512_srli_epi16(lo, 4), low));
            _mm512_store_si512(split + 192, _mm512_and_si512(_mm512_srli_epi16(hi, 4), low));
            b = split;
        }
        _tile_zero(TC);
        _tile_loadd(TA, a, stride);
        _tile_loadd(TB, b, 32);
        if (type == CK_Q8_0)
            _tile_dpbssd(TC, TA, TB);
        else
            _tile_dpbsud(TC, TA, TB);
        _tile_stored(TC, cbuf, 32);
        const __m512 xsg = has_min ? _mm512_loadu_ps(xs + 16 * g) : _mm512_setzero_ps();
        for (int t = 0; t < 8; t++) {
            const __m512 x = _mm512_permutexvar_ps(pair[t], dxg);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cbuf + 16 * t)), _mm512_mul_ps(d, x), acc[t]);
            if (has_min) macc[t] = _mm512_fmadd_ps(m, _mm512_permutexvar_ps(pair[t], xsg), macc[t]);
        }
    }
    for (int t = 0; t < 8; t++) out[t] = _mm512_add_ps(acc[t], macc[t]);
}

static void amx_dispatch(int type, const uint8_t *p, int64_t groups, const uint8_t *xq, int64_t stride, const float *dx, const float *xs,
                         int32_t *cbuf, __m512 out[8]) {
#define CK_AMX(T) case T: amx_group(T, p, groups, xq, stride, dx, xs, cbuf, out); break;
    switch (type) { CK_R8_TYPES(CK_AMX) default: break; }
#undef CK_AMX
}

/// ck_matmul_r8 for batch·parts vectors, 16 at a time (a last partial tile has fewer A/C rows).
int ck_matmul_r8_amx(int type, const uint8_t *packed, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y, int64_t y_stride,
                     int64_t batch, int parts, int64_t row_begin, int64_t row_end) {
    // Q5_0's packed nibbles and fifth-bit plane are not split into B tiles here: ck_matmul_r8 runs it on VNNI.
    if (!r8_args_ok(type, cols, row_begin, row_end, parts) || type == CK_Q5_0) return -1;
    const int64_t groups = cols / 32, group_bytes = groups * block8_bytes(type), slots = batch * parts;
    // The transposed block scales: on the stack for rows up to 8192 values, else for this call.
    float stack_scales[32 * 256];
    float *scales_buf = groups <= 256 ? stack_scales : malloc((size_t)(32 * groups) * sizeof(float));
    if (scales_buf == NULL) return -1;
    float *dx = scales_buf, *xs = scales_buf + 16 * groups;
    __attribute__((aligned(64))) int32_t cbuf[256];
    memset(cbuf, 0, sizeof cbuf);
    const uint8_t *end = packed + row_end / 8 * group_bytes;
    __m512 out[8];
    int configured = 0;
    for (int64_t b = 0; b < slots; b += 16) {
        const int M = slots - b < 16 ? (int)(slots - b) : 16;
        if (M != configured) configure(M), configured = M;
        // Rows of the last tile past M stay zero in cbuf (tile stores write M rows); their scales are zero.
        for (int64_t g = 0; g < groups; g++)
            for (int v = 0; v < 16; v++) {
                const float *scales = (const float *)(xq + (b + v) * xq_stride + cols);
                dx[16 * g + v] = v < M ? scales[g] : 0;
                xs[16 * g + v] = v < M ? scales[groups + g] : 0;
            }
        const uint8_t *a = xq + b * xq_stride;
        for (int64_t G = row_begin / 8; G < row_end / 8; G++) {
            const uint8_t *p = packed + G * group_bytes;
            ck_prefetch_ahead(p, group_bytes, CK_PREFETCH_BYTES, end);
            amx_dispatch(type, p, groups, a, xq_stride, dx, xs, cbuf, out);
            for (int t = 0; 2 * t < M; t++) {
                const __m256 first = _mm512_castps512_ps256(out[t]), second = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(out[t]), 1));
                const int64_t v = b + 2 * t;
                if (parts == 2) {
                    _mm256_storeu_ps(y + v / 2 * y_stride + 8 * G, _mm256_add_ps(first, second));
                } else {
                    _mm256_storeu_ps(y + v * y_stride + 8 * G, first);
                    if (2 * t + 1 < M) _mm256_storeu_ps(y + (v + 1) * y_stride + 8 * G, second);
                }
            }
        }
    }
    _tile_release();
    if (scales_buf != stack_scales) free(scales_buf);
    return 0;
}

#pragma clang attribute pop
#endif
