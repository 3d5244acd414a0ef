// The product of int8 activations and eight-row packed weights (layout: kernels_x86_r8.c), compiled once per
// instruction set: included with CK_R8_SUFFIX (the function's suffix) and CK_R8_VNNI (1: VPDPBUSD sums four
// byte products straight into 32-bit lanes; 0: VPMADDUBSW pair sums in 16 bits, widened by VPMADDWD). Both
// give the same integers per block and the float arithmetic is written once here, so every variant's
// results are bit-identical.
#define CK_R8_CAT2(a, b) a##_##b
#define CK_R8_CAT(a, b) CK_R8_CAT2(a, b)

/// Four activation values (c = 0..7 of block g) in every 32-bit lane.
#ifndef CK_R8_X4
#define CK_R8_X4
static inline __m256i x4(const int8_t *xq, int64_t g, int c) {
    int32_t v;
    memcpy(&v, xq + 32 * g + 4 * c, 4);
    return _mm256_set1_epi32(v);
}
#endif

/// One group of eight rows against V (1..4) vectors: lane r of acc[v] is row r's sum.
static inline __attribute__((always_inline)) void CK_R8_CAT(r8_group, CK_R8_SUFFIX)(const int type, const uint8_t *p, int64_t groups, const int8_t *const *xq_,
                                                          const float *const *xd_, const float *const *xs_, const int V, __m256 out[4]) {
    const int8_t *xq[4];
    const float *xd[4], *xs[4];
    for (int v = 0; v < V; v++) xq[v] = xq_[v], xd[v] = xd_[v], xs[v] = xs_[v];
    const int has_min = type != CK_Q8_0 && type != CK_Q6_K, wide = type == CK_Q4_K || type == CK_Q6_K;
    const int64_t bytes = block8_bytes(type), header = header_bytes(type);
    __m256 acc[4], macc[4];
    for (int v = 0; v < 4; v++) acc[v] = _mm256_setzero_ps(), macc[v] = _mm256_setzero_ps();
#if !CK_R8_VNNI
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    const __m256i low = _mm256_set1_epi8(0x0F);
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
#if CK_R8_VNNI
                    a = _mm256_dpbusd_epi32(a, _mm256_abs_epi8(w[c]), _mm256_sign_epi8(xa, w[c]));
                    b = _mm256_dpbusd_epi32(b, _mm256_abs_epi8(w[c + 4]), _mm256_sign_epi8(xb, w[c + 4]));
#else
                    a = _mm256_add_epi16(a, _mm256_maddubs_epi16(_mm256_abs_epi8(w[c]), _mm256_sign_epi8(xa, w[c])));
                    b = _mm256_add_epi16(b, _mm256_maddubs_epi16(_mm256_abs_epi8(w[c + 4]), _mm256_sign_epi8(xb, w[c + 4])));
#endif
                }
#if !CK_R8_VNNI
                a = _mm256_madd_epi16(a, ones), b = _mm256_madd_epi16(b, ones);
#endif
                const __m256 dx = _mm256_broadcast_ss(xd[v] + g);
                acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), _mm256_mul_ps(d, dx), acc[v]);
                acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(b), _mm256_mul_ps(m, dx), acc[v]);
                continue;
            }
#if CK_R8_VNNI
            // Four byte products per lane straight into 32 bits; signed weights as |w| times x with w's sign.
            const int is_signed = type == CK_Q8_0;
            sum = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) {
                const __m256i x = x4(xq[v], g, c);
                sum = is_signed ? _mm256_dpbusd_epi32(sum, _mm256_abs_epi8(w[c]), _mm256_sign_epi8(x, w[c])) : _mm256_dpbusd_epi32(sum, w[c], x);
            }
#else
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
#endif
            acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(d, _mm256_broadcast_ss(xd[v] + g)), acc[v]);
            if (has_min) macc[v] = _mm256_fmadd_ps(m, _mm256_broadcast_ss(xs[v] + g), macc[v]);
        }
    }
    for (int v = 0; v < V; v++) out[v] = _mm256_add_ps(acc[v], macc[v]);
}

static void CK_R8_CAT(r8_dispatch, CK_R8_SUFFIX)(int type, const uint8_t *p, int64_t groups, const int8_t *const *xq, const float *const *xd,
                        const float *const *xs, int V, __m256 out[4]) {
#define CK_R8(T)                                                                                                          \
    switch (V) {                                                                                                          \
    case 1: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, xq, xd, xs, 1, out); break;                                                            \
    case 2: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, xq, xd, xs, 2, out); break;                                                            \
    case 3: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, xq, xd, xs, 3, out); break;                                                            \
    default: CK_R8_CAT(r8_group, CK_R8_SUFFIX)(T, p, groups, xq, xd, xs, 4, out); break;                                                           \
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
int CK_R8_CAT(ck_matmul_r8, CK_R8_SUFFIX)(int type, const uint8_t *packed, int64_t cols, const uint8_t *xq, int64_t xq_stride, float *y, int64_t y_stride,
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
            CK_R8_CAT(r8_dispatch, CK_R8_SUFFIX)(type, p, groups, xv, xd, xs, V, out);
            for (int v = 0; v < V; v += parts)
                _mm256_storeu_ps(y + (b + v) / parts * y_stride + 8 * G, parts == 2 ? _mm256_add_ps(out[v], out[v + 1]) : out[v]);
        }
    }
    return 0;
}

#undef CK_R8_SUFFIX
#undef CK_R8_VNNI
