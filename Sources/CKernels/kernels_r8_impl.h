// The product of int8 activations and eight-row packed weights (layout: kernels_x86_r8.c), compiled once per
// instruction set: included with CK_R8_SUFFIX (the function's suffix) and CK_R8_VNNI (1: VPDPBUSD sums four
// byte products straight into 32-bit lanes; 0: VPMADDUBSW pair sums in 16 bits, widened by VPMADDWD). Both
// give the same integers per block and the float arithmetic is written once here, so every variant's
// results are bit-identical.
#define CK_R8_CAT2(a, b) a##_##b
#define CK_R8_CAT(a, b) CK_R8_CAT2(a, b)

#ifndef CK_R8_SHARED
#define CK_R8_SHARED
/// Four activation values (c = 0..7 of block g) in every 32-bit lane.
static inline __m256i x4(const uint8_t *xq, int64_t g, int c) {
    int32_t v;
    memcpy(&v, xq + 32 * g + 4 * c, 4);
    return _mm256_set1_epi32(v);
}

/// Float `i` of the array that starts `offset` bytes into a quantized vector (its scales, then its sums).
static inline float q8_float(const uint8_t *x, int64_t offset, int64_t i) {
    float f;
    memcpy(&f, x + offset + 4 * i, 4);
    return f;
}
#endif

#if CK_R8_VNNI
/// Lane-wise: acc + Σ of four u8·s8 products (one instruction; the VNNI file can map it for a test build).
#ifndef CK_DPBUSD
#define CK_DPBUSD(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#endif
#endif

/// How far ahead of the block being multiplied the kernel asks for weight bytes, a block at a time (a few
/// lines) rather than the whole next group at once, so the requests stay spread out. Measured streaming a
/// 49152×576 matrix from DRAM, one thread, medians of 3 on a noisy VM: Q8_0 ~9 GB/s against ~7.5 with
/// group bursts; Q4_1 the same within noise (~13).
#ifndef CK_R8_PREFETCH
#define CK_R8_PREFETCH 4096
#endif

/// One group of eight rows against V (1..4) vectors, quantized by ck_quantize_q8 and `stride` bytes apart
/// from `x`: lane r of out[v] is row r's sum. The integer sums run c-outer (each weight register meets
/// all V vectors while live) so that the accumulators fit AVX2's sixteen registers; the minimums' terms
/// are summed in a second pass over the block headers, for the same reason, in the same order as before.
static inline __attribute__((always_inline)) void CK_R8_CAT(r8_group, CK_R8_SUFFIX)(const int type, const uint8_t *p, int64_t groups,
                                                                                  const uint8_t *x, int64_t stride, int64_t cols,
                                                                                  const int V, const int prefetch, __m256 out[4]) {
    const int has_min = type != CK_Q8_0 && type != CK_Q6_K, wide = type == CK_Q4_K || type == CK_Q6_K;
    const int64_t bytes = block8_bytes(type), header = header_bytes(type), sums = cols + 4 * groups;
    const uint8_t *const first = p;
    __m256 acc[4];
    for (int v = 0; v < 4; v++) acc[v] = _mm256_setzero_ps();
#if !CK_R8_VNNI
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    const __m256i low = _mm256_set1_epi8(0x0F);
#define XV(v, c) x4(x + (v) * stride, g, c)
    for (int64_t g = 0; g < groups; g++, p += bytes) {
        if (prefetch)
            for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + CK_R8_PREFETCH + o, _MM_HINT_T0);
        // Q6_K: d scales values 0..15, m (its second scale) values 16..31.
        const __m256 d = wide ? _mm256_loadu_ps((const float *)p) : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        const uint8_t *vals = p + header;
        __m256i sum[4], second[4];
        for (int v = 0; v < 4; v++) sum[v] = second[v] = _mm256_setzero_si256();
        if (type == CK_Q4_0 || type == CK_Q4_1 || type == CK_Q4_K || type == CK_Q5_0) {
            // Register j: values 4j..4j+3 in the low nibbles, 4(j+4).. in the high ones; Q5_0's fifth bits come
            // from the plane after them (bit j of a byte: its low nibble's value, bit 4+j: its high one's),
            // moved to bit 4 by 16-bit shifts whose spill into the neighbouring byte the mask drops. Pair sums
            // ≤ 2·15·127, so all eight fit one 16-bit accumulator on AVX2; Q5_0's (≤ 2·31·127) four.
            const __m256i fifth = type == CK_Q5_0 ? _mm256_loadu_si256((const __m256i *)(vals + 128)) : _mm256_setzero_si256();
#if !CK_R8_VNNI
            __m256i s16[4];
            for (int v = 0; v < 4; v++) s16[v] = _mm256_setzero_si256();
#endif
            for (int j = 0; j < 4; j++) {
                const __m256i b = _mm256_loadu_si256((const __m256i *)(vals + 32 * j));
                __m256i lo = _mm256_and_si256(b, low), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low);
                if (type == CK_Q5_0) {
                    const __m256i bit4 = _mm256_set1_epi8(0x10);
                    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(fifth, 4 - j), bit4));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srli_epi16(fifth, j), bit4));
                }
                for (int v = 0; v < V; v++) {
#if CK_R8_VNNI
                    sum[v] = CK_DPBUSD(CK_DPBUSD(sum[v], lo, XV(v, j)), hi, XV(v, j + 4));
#else
                    s16[v] = _mm256_add_epi16(s16[v], _mm256_add_epi16(_mm256_maddubs_epi16(lo, XV(v, j)), _mm256_maddubs_epi16(hi, XV(v, j + 4))));
#endif
                }
#if !CK_R8_VNNI
                if (j == 3 || (type == CK_Q5_0 && j == 1))
                    for (int v = 0; v < V; v++) {
                        sum[v] = _mm256_add_epi32(sum[v], _mm256_madd_epi16(s16[v], ones));
                        s16[v] = _mm256_setzero_si256();
                    }
#endif
            }
        } else {
            // Whole bytes, in two halves of four registers: expanded Q5_0's unsigned; Q8_0's and Q6_K's signed,
            // taken as |w| times x with w's sign; Q6_K's halves have their own scales. Q5_0's pair sums
            // (≤ 2·31·127) and Q6_K's (≤ 2·32·127) fit four to a 16-bit accumulator, Q8_0's need widening one
            // by one.
            const int is_signed = type != CK_R8_Q5_0_BYTES;
            for (int half = 0; half < 2; half++) {
                __m256i *into = type == CK_Q6_K && half ? second : sum;
#if !CK_R8_VNNI
                __m256i s16[4];
                for (int v = 0; v < 4; v++) s16[v] = _mm256_setzero_si256();
#endif
                for (int c = 4 * half; c < 4 * half + 4; c++) {
                    const __m256i w = _mm256_loadu_si256((const __m256i *)(vals + 32 * c)), u = is_signed ? _mm256_abs_epi8(w) : w;
                    for (int v = 0; v < V; v++) {
                        const __m256i xs = is_signed ? _mm256_sign_epi8(XV(v, c), w) : XV(v, c);
#if CK_R8_VNNI
                        into[v] = CK_DPBUSD(into[v], u, xs);
#else
                        const __m256i pairs = _mm256_maddubs_epi16(u, xs);
                        if (type == CK_Q8_0)
                            into[v] = _mm256_add_epi32(into[v], _mm256_madd_epi16(pairs, ones));
                        else
                            s16[v] = _mm256_add_epi16(s16[v], pairs);
#endif
                    }
                }
#if !CK_R8_VNNI
                if (type != CK_Q8_0)
                    for (int v = 0; v < V; v++) into[v] = _mm256_add_epi32(into[v], _mm256_madd_epi16(s16[v], ones));
#endif
            }
        }
        for (int v = 0; v < V; v++) {
            const __m256 dx = _mm256_set1_ps(q8_float(x + v * stride, cols, g));
            acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[v]), _mm256_mul_ps(d, dx), acc[v]);
            if (type == CK_Q6_K) {
                const __m256 m = _mm256_loadu_ps((const float *)(p + 32));
                acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(second[v]), _mm256_mul_ps(m, dx), acc[v]);
            }
        }
    }
#undef XV
    // The minimums' terms: Σ_g m_g · (d_x Σ q)_g per vector, then added to the products' sum.
    __m256 macc[4];
    for (int v = 0; v < 4; v++) macc[v] = _mm256_setzero_ps();
    if (has_min) {
        p = first;
        for (int64_t g = 0; g < groups; g++, p += bytes) {
            const __m256 m = wide ? _mm256_loadu_ps((const float *)(p + 32)) : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
            for (int v = 0; v < V; v++) macc[v] = _mm256_fmadd_ps(m, _mm256_set1_ps(q8_float(x + v * stride, sums, g)), macc[v]);
        }
    }
    for (int v = 0; v < V; v++) out[v] = _mm256_add_ps(acc[v], macc[v]);
}

static void CK_R8_CAT(r8_dispatch, CK_R8_SUFFIX)(int type, const uint8_t *p, int64_t groups, const uint8_t *x, int64_t stride, int64_t cols,
                                                int V, int prefetch, __m256 out[4]) {
#define CK_R8(T)                                                                                                                     \
    case T:                                                                                                                          \
        switch (V) {                                                                                                                 \
        case 1: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, x, stride, cols, 1, prefetch, out); break;                          \
        case 2: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, x, stride, cols, 2, prefetch, out); break;                          \
        case 3: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, x, stride, cols, 3, prefetch, out); break;                          \
        default: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, x, stride, cols, 4, prefetch, out); break;                         \
        }                                                                                                                            \
        break;
    switch (type) { CK_R8_TYPES(CK_R8) CK_R8(CK_R8_Q5_0_BYTES) default: break; }
#undef CK_R8
}

#ifndef CK_R8_Q5_0_EXPAND
#define CK_R8_Q5_0_EXPAND
/// A packed Q5_0 group's `groups` blocks as CK_R8_Q5_0_BYTES blocks: each nibble register's low and high
/// nibbles with their fifth bits, as two whole-byte registers (values 4j.. and 4(j+4)..).
static inline void q5_0_expand(const uint8_t *p, int64_t groups, uint8_t *out) {
    const __m256i low = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
    for (int64_t g = 0; g < groups; g++, p += 192, out += 288) {
        for (int o = 0; o < 192; o += 64) _mm_prefetch((const char *)p + CK_R8_PREFETCH + o, _MM_HINT_T0);
        _mm256_storeu_si256((__m256i *)out, _mm256_loadu_si256((const __m256i *)p));
        const __m256i fifth = _mm256_loadu_si256((const __m256i *)(p + 160));
        for (int j = 0; j < 4; j++) {
            const __m256i b = _mm256_loadu_si256((const __m256i *)(p + 32 + 32 * j));
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(b, low), _mm256_and_si256(_mm256_slli_epi16(fifth, 4 - j), bit4));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), low), _mm256_and_si256(_mm256_srli_epi16(fifth, j), bit4));
            _mm256_storeu_si256((__m256i *)(out + 32 + 32 * j), lo);
            _mm256_storeu_si256((__m256i *)(out + 32 + 32 * (j + 4)), hi);
        }
    }
}
#endif

/// Rows [row_begin, row_end) (multiples of 8) of packed weights against `batch` quantized vectors, four at a
/// time per group of rows (the group's blocks come from L1 again for each four); with `parts` 2, (high,
/// residual) pairs whose results are added.
int CK_R8_CAT(ck_matmul_r8, CK_R8_SUFFIX)(int type, const uint8_t *packed, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y,
                                          int64_t y_stride, int64_t batch, int parts, int64_t row_begin, int64_t row_end) {
    if (!r8_args_ok(type, cols, row_begin, row_end, parts)) return -1;
    const int64_t groups = cols / 32, group_bytes = groups * block8_bytes(type), slots = batch * parts;
    // Q5_0 read by more than one pass of four vectors: each group's fifth bits are merged once, into
    // whole bytes, instead of once per pass (the integer sums are the same either way). The expanded group
    // is on the stack for rows up to 4096 values, else allocated for this call.
    const int expand = type == CK_Q5_0 && slots > 4;
    __attribute__((aligned(64))) uint8_t stack_group[128 * 288];
    uint8_t *scratch = !expand ? NULL : groups <= 128 ? stack_group : malloc((size_t)(groups * 288));
    if (expand && scratch == NULL) return -1;
    __m256 out[4];
    for (int64_t G = row_begin / 8; G < row_end / 8; G++) {
        const uint8_t *p = packed + G * group_bytes;
        int t = type;
        if (expand) {
            q5_0_expand(p, groups, scratch);
            p = scratch, t = CK_R8_Q5_0_BYTES;
        }
        for (int64_t b = 0; b < slots; b += 4) {
            const int V = slots - b < 4 ? (int)(slots - b) : 4;
            // The first four vectors' pass brings the weights in; the others find them in L1.
            CK_R8_CAT(r8_dispatch, CK_R8_SUFFIX)(t, p, groups, xq + b * xq_stride, xq_stride, cols, V, b == 0 && !expand, out);
            for (int v = 0; v < V; v += parts)
                _mm256_storeu_ps(y + (b + v) / parts * y_stride + 8 * G, parts == 2 ? _mm256_add_ps(out[v], out[v + 1]) : out[v]);
        }
    }
    if (scratch != stack_group) free(scratch);
    return 0;
}

#undef CK_R8_SUFFIX
#undef CK_R8_VNNI
