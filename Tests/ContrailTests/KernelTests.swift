import CKernels
#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import Contrail

/// llama.cpp test-backend-ops style: every kernel variant against the portable one on random data.
@Suite("CPU kernels", .serialized)
struct KernelTests {
    /// Random but valid blocks: f16 scales are finite (exponent bits kept small).
    func randomRow(_ type: TensorType, columns: Int, rng: inout SeededGenerator) -> [UInt8] {
        var bytes = (0..<type.byteCount(elements: columns)!).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let blocks = columns / type.blockElements
        func scale(_ at: Int) {
            let h = Float16(Float(rng.nextUnit() * 0.1 + 0.001)).bitPattern
            bytes[at] = UInt8(h & 0xFF)
            bytes[at + 1] = UInt8(h >> 8)
        }
        for b in 0..<blocks {
            let o = b * type.blockBytes
            switch type {
            case .q4_0, .q5_0, .q8_0: scale(o)
            case .q4_1, .q5_1, .q4_K, .q5_K: scale(o); scale(o + 2)
            case .q6_K: scale(o + 208)
            default: break
            }
        }
        if type == .f16 { for i in stride(from: 0, to: bytes.count, by: 2) { bytes[i + 1] &= 0x3B } }
        if type == .f32 { for i in stride(from: 0, to: bytes.count, by: 4) { bytes[i + 3] = 0x3F; bytes[i + 2] &= 0x7F } }
        if type == .bf16 { for i in stride(from: 0, to: bytes.count, by: 2) { bytes[i + 1] = 0x3F } }
        return bytes
    }

    /// `rows` random rows of `type`, with their stride and the kernels' type code.
    func randomMatrix(_ type: TensorType, rows: Int, columns: Int, rng: inout SeededGenerator) -> (bytes: [UInt8], rowBytes: Int, code: Int32) {
        var bytes: [UInt8] = []
        for _ in 0..<rows { bytes += randomRow(type, columns: columns, rng: &rng) }
        return (bytes, type.byteCount(elements: columns)!, Int32(CPUKernels.ggmlType(type)))
    }

    @Test(arguments: [TensorType.f32, .f16, .bf16, .i8, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K])
    func variantsMatchPortable(_ type: TensorType) throws {
        guard ck_has_avx2() == 1 else {
            print("KernelTests: this CPU lacks AVX2/FMA/F16C; only the portable kernels run here (skipping the comparison)")
            return
        }
        var rng = SeededGenerator(seed: 42)
        let rows = 8, columns = 512
        let (weights, rowBytes, t) = randomMatrix(type, rows: rows, columns: columns, rng: &rng)
        let x = (0..<columns).map { _ in rng.nextUnit() * 2 - 1 }
        var portable = [Float](repeating: 0, count: rows), fast = [Float](repeating: 0, count: rows)
        ck_force_generic(1)
        _ = ck_matvec(t, weights, Int64(rowBytes), Int64(columns), x, &portable, 0, Int64(rows))
        // Each SIMD level the CPU has: at most AVX2, then the best (AVX-512 where present).
        for limit: Int32 in ck_has_avx512() == 1 ? [2, 0] : [0] {
            ck_set_thread_isa_limit(limit)
            _ = ck_matvec(t, weights, Int64(rowBytes), Int64(columns), x, &fast, 0, Int64(rows))
            for r in 0..<rows {
                #expect(abs(portable[r] - fast[r]) <= 1e-4 * max(1, abs(portable[r])), "\(type) limit \(limit) row \(r): \(portable[r]) vs \(fast[r])")
            }
        }
        ck_set_thread_isa_limit(-1)
        // And the portable kernel agrees with the Swift reference dequantizer (itself checked against gguf-py).
        var row = [Float](repeating: 0, count: columns)
        for r in 0..<rows {
            weights.withUnsafeBytes { Dequantize.run(type, $0.baseAddress! + r * rowBytes, count: columns, into: &row) }
            var dot: Double = 0
            for c in 0..<columns { dot += Double(row[c]) * Double(x[c]) }
            #expect(abs(Float(dot) - portable[r]) <= 1e-3 * max(1, abs(portable[r])), "\(type) row \(r) vs reference")
        }
    }

    /// The batched matmul (rows expanded once, register-blocked over the vectors) against the portable
    /// per-vector kernel, for batch sizes that fill the register blocks and leave remainders.
    @Test(arguments: [TensorType.q4_0, .q4_1, .q8_0, .q5_0, .q4_K, .q6_K, .f32])
    func batchedMatmulMatchesPerVector(_ type: TensorType) throws {
        var rng = SeededGenerator(seed: 7)
        // f32 rows of 520 exercise the SIMD kernels' partial last chunk.
        let rows = 6, columns = type == .f32 ? 520 : 512
        let (weights, rowBytes, t) = randomMatrix(type, rows: rows, columns: columns, rng: &rng)
        // Native (AVX-512 where present) and AVX2-limited dispatch.
        for (limit, batch) in [0, 2].flatMap({ l in [1, 2, 3, 4, 7, 8, 9, 16].map { (l, $0) } }) {
            let x = (0..<batch * columns).map { _ in rng.nextUnit() * 2 - 1 }
            var y = [Float](repeating: 0, count: batch * rows)
            ck_set_thread_isa_limit(Int32(limit))
            _ = ck_matmul(t, weights, Int64(rowBytes), Int64(columns), x, Int64(columns), &y, Int64(rows), Int64(batch), 0, Int64(rows))
            ck_force_generic(1)
            for b in 0..<batch {
                var expected = [Float](repeating: 0, count: rows)
                x.withUnsafeBufferPointer { xb in
                    _ = ck_matvec(t, weights, Int64(rowBytes), Int64(columns), xb.baseAddress! + b * columns, &expected, 0, Int64(rows))
                }
                for r in 0..<rows {
                    // Reordered f32 sums differ by a few ulps of Σ|w·x| (the terms cancel, so not of the result).
                    var row = [Float](repeating: 0, count: columns)
                    weights.withUnsafeBytes { Dequantize.run(type, $0.baseAddress! + r * rowBytes, count: columns, into: &row) }
                    var magnitude: Float = 0
                    for c in 0..<columns { magnitude += abs(row[c] * x[b * columns + c]) }
                    #expect(abs(y[b * rows + r] - expected[r]) <= 1e-5 * max(1, magnitude), "\(type) isa limit \(limit) batch \(batch) b \(b) r \(r)")
                }
            }
            ck_force_generic(0)
        }
    }

    /// Every (row, vector) pair is summed the same way whatever its group — rows expanded once into a
    /// buffer for many vectors, or in registers for one to three (AVX2) — so a vector's results are
    /// bit-identical at any batch size: decoding among others changes nothing. At the best dispatch and
    /// capped at AVX2; f32 also with a row length that is not whole groups of 32.
    @Test(arguments: [(TensorType.q4_0, 256), (.q4_1, 256), (.q5_0, 256), (.q8_0, 256), (.q4_K, 512), (.q6_K, 512), (.f32, 256),
                      (.f32, 200), (.f16, 256), (.bf16, 256)])
    func expandedMatmulIsBatchInvariant(_ type: TensorType, _ columns: Int) throws {
        var rng = SeededGenerator(seed: 11)
        let rows = 7
        let (weights, rowBytes, t) = randomMatrix(type, rows: rows, columns: columns, rng: &rng)
        let x = (0..<16 * columns).map { _ in rng.nextUnit() * 2 - 1 }
        for limit: Int32 in [0, 2] {
            ck_set_thread_isa_limit(limit)
            defer { ck_set_thread_isa_limit(-1) }
            func run(_ batch: Int) -> [Float] {
                var y = [Float](repeating: 0, count: batch * rows)
                _ = ck_matmul(t, weights, Int64(rowBytes), Int64(columns), x, Int64(columns), &y, Int64(rows), Int64(batch), 0, Int64(rows))
                return y
            }
            let full = run(16)
            for batch in [1, 2, 3, 4, 5, 8, 9, 10, 13] {
                let y = run(batch)
                #expect(Array(full[0..<batch * rows]) == y, "\(type) isa limit \(limit) batch \(batch) vs 16")
            }
        }
    }
}

extension KernelTests {
    /// KV cache rows: bf16 stores round to nearest even (as `bfloat16`), int8 stores keep each value within
    /// half a step of its row's scale (max |x| / 127); attention over bf16/int8 rows equals f32 attention over
    /// the rows they decode to, at every dispatch (portable, AVX2).
    @Test func quantizedKVCacheRows() throws {
        var rng = SeededGenerator(seed: 9)
        let (span, headDim) = (37, 64)
        let keys = (0..<span * headDim).map { _ in Float(rng.nextUnit() * 4 - 2) }, values = (0..<span * headDim).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let q = (0..<headDim).map { _ in Float(rng.nextUnit() - 0.5) }
        for limit: Int32 in [1, 2] {
            ck_set_thread_isa_limit(limit)
            defer { ck_set_thread_isa_limit(-1) }
            for (type, width) in [(Int32(CK_KV_BF16), 2), (Int32(CK_KV_I8), 1)] {
                var stored = [UInt8](repeating: 0, count: 2 * span * headDim * width)
                var scales = [Float](repeating: 0, count: 2 * span)
                var decoded = [Float](repeating: 0, count: 2 * span * headDim)
                for (half, source) in [keys, values].enumerated() {
                    for t in 0..<span {
                        let row = (half * span + t) * headDim
                        stored.withUnsafeMutableBytes { out in
                            scales.withUnsafeMutableBufferPointer { s in
                                source.withUnsafeBufferPointer { ck_kv_store(type, $0.baseAddress! + t * headDim, Int64(headDim), out.baseAddress! + row * width, s.baseAddress! + half * span + t) }
                            }
                        }
                        for i in 0..<headDim {
                            let x = source[t * headDim + i]
                            if type == CK_KV_BF16 {
                                let bits = stored.withUnsafeBytes { $0.load(fromByteOffset: (row + i) * 2, as: UInt16.self) }
                                #expect(bits == bfloat16(x))
                                decoded[row + i] = Float(bitPattern: UInt32(bits) << 16)
                            } else {
                                let d = scales[half * span + t]
                                decoded[row + i] = Float(Int8(bitPattern: stored[row + i])) * d
                                #expect(abs(decoded[row + i] - x) <= d / 2 * 1.0001, "int8 row \(t) value \(i)")
                            }
                        }
                    }
                }
                var scratch = [Float](repeating: 0, count: span), quantized = [Float](repeating: 0, count: headDim), exact = quantized
                stored.withUnsafeBytes { raw in
                    scales.withUnsafeBufferPointer { s in
                        ck_attention(type, q, raw.baseAddress!, s.baseAddress!, raw.baseAddress! + span * headDim * width, s.baseAddress! + span,
                                     Int64(headDim), Int64(span), Int64(headDim), 0.125, 0, &scratch, &quantized)
                    }
                }
                decoded.withUnsafeBufferPointer { d in
                    ck_attention(Int32(CK_KV_F32), q, d.baseAddress!, nil, d.baseAddress! + span * headDim, nil, Int64(headDim), Int64(span),
                                 Int64(headDim), 0.125, 0, &scratch, &exact)
                }
                #expect(quantized == exact, "kv type \(type), ISA limit \(limit)")
            }
        }
    }
}

extension KernelTests {
    /// `batch` vectors quantized for the int8 products, `stride` bytes apart.
    func quantized(_ x: [Float], columns: Int, batch: Int) -> (bytes: [UInt8], stride: Int) {
        let stride = Int(ck_q8_size(Int64(columns)))
        var q = [UInt8](repeating: 0, count: batch * stride)
        q.withUnsafeMutableBytes { out in
            x.withUnsafeBufferPointer { xb in
                for b in 0..<batch { ck_quantize_q8(xb.baseAddress! + b * columns, Int64(columns), out.baseAddress! + b * stride) }
            }
        }
        return (q, stride)
    }

    /// Int8-activation products (llama.cpp's scheme): the AVX2 and portable copies quantize identically and
    /// agree to float rounding; both stay within the quantization's own bound of the exact product,
    /// Σ_c |w_c|·d_c/2 (each activation moves at most half its block's step d); and a vector's results
    /// are bit-identical at every batch size.
    @Test(arguments: [(TensorType.q4_0, 256), (.q4_1, 256), (.q5_0, 256), (.q8_0, 256), (.q4_K, 512), (.q6_K, 512)])
    func int8ActivationProducts(_ type: TensorType, _ columns: Int) throws {
        var rng = SeededGenerator(seed: 23)
        let rows = 7
        let (weights, rowBytes, t) = randomMatrix(type, rows: rows, columns: columns, rng: &rng)
        #expect(ck_q8_supports(t, Int64(columns)) == 1)
        let x = (0..<16 * columns).map { _ in rng.nextUnit() * 2 - 1 }
        ck_force_generic(1)
        let (portableQ, stride) = quantized(x, columns: columns, batch: 16)
        var portable = [Float](repeating: 0, count: 16 * rows)
        #expect(ck_matmul_q8(t, weights, Int64(rowBytes), Int64(columns), portableQ, Int64(stride), &portable, Int64(rows), 16, 1, 0, Int64(rows)) == 0)
        ck_force_generic(0)
        var dequantized = [Float](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            weights.withUnsafeBytes { w in
                dequantized.withUnsafeMutableBufferPointer { Dequantize.run(type, w.baseAddress! + r * rowBytes, count: columns, into: $0.baseAddress! + r * columns) }
            }
        }
        for b in 0..<16 {
            for r in 0..<rows {
                var exact: Double = 0, bound: Double = 0, magnitude: Float = 0
                for c in 0..<columns {
                    let w = Double(dequantized[r * columns + c]), xv = x[b * columns + c]
                    exact += w * Double(xv)
                    var top: Float = 0
                    for k in 0..<32 { top = max(top, abs(x[b * columns + (c / 32) * 32 + k])) }
                    bound += abs(w) * Double(top / 127) / 2
                    magnitude += abs(Float(w) * xv)
                }
                let got = portable[b * rows + r]
                #expect(abs(Double(got) - exact) <= bound + 1e-5 * Double(magnitude), "\(type) b \(b) r \(r): \(got) vs exact \(exact), bound \(bound)")
            }
        }
        guard ck_has_avx2() == 1 else {
            print("KernelTests: this CPU lacks AVX2/FMA/F16C; only the portable int8-activation kernels ran")
            return
        }
        ck_set_thread_isa_limit(2)
        defer { ck_set_thread_isa_limit(-1) }
        let (fastQ, _) = quantized(x, columns: columns, batch: 16)
        #expect(fastQ == portableQ, "\(type): AVX2 quantization differs from the portable one")
        func run(_ batch: Int) -> [Float] {
            var y = [Float](repeating: 0, count: batch * rows)
            _ = ck_matmul_q8(t, weights, Int64(rowBytes), Int64(columns), fastQ, Int64(stride), &y, Int64(rows), Int64(batch), 1, 0, Int64(rows))
            return y
        }
        let full = run(16)
        for i in 0..<16 * rows {
            #expect(abs(full[i] - portable[i]) <= 1e-5 * max(1, abs(portable[i])), "\(type) \(i): AVX2 \(full[i]) vs portable \(portable[i])")
        }
        for batch in [1, 2, 3, 4, 5, 8, 9, 13] {
            #expect(Array(full[0..<batch * rows]) == run(batch), "\(type) batch \(batch) vs 16")
        }
    }

    @Test func int8ActivationProductsRefuseOtherTypes() {
        let x = [Float](repeating: 1, count: 64)
        let (q, stride) = quantized(x, columns: 64, batch: 1)
        var y = [Float](repeating: 0, count: 1)
        let w = [Float](repeating: 1, count: 64)
        #expect(ck_q8_supports(CPUKernels.ggmlType(.f32), 64) == 0)
        #expect(ck_matmul_q8(CPUKernels.ggmlType(.f32), w, 256, 64, q, Int64(stride), &y, 1, 1, 1, 0, 1) == -1)
        #expect(ck_q8_supports(CPUKernels.ggmlType(.q4_K), 64) == 0, "Q4_K rows must be whole super-blocks")
    }
}

extension KernelTests {
    /// `rows` rows of `x` (`rowStride` apart) stored as a cache of `type` (`width` bytes a value), with
    /// their scales (int8).
    func cacheRows(_ x: [Float], type: Int32, width: Int, rows: Int, rowStride: Int) -> (bytes: [UInt8], scales: [Float]) {
        var bytes = [UInt8](repeating: 0, count: rows * rowStride * width), scales = [Float](repeating: 0, count: rows)
        for t in 0..<rows {
            x.withUnsafeBufferPointer { ck_kv_store(type, $0.baseAddress! + t * rowStride, Int64(rowStride), &bytes[t * rowStride * width], &scales[t]) }
        }
        return (bytes, scales)
    }

    /// The AVX2 attention (four keys at a time, values summed in registers) against the portable one, for
    /// every cache storage, head sizes that fill its 64-wide blocks or not (and 60, which it leaves to the
    /// auto-vectorized copy), spans with and without a remainder of four, with and without soft-capping.
    @Test func attentionMatchesPortable() throws {
        guard ck_has_avx2() == 1 else {
            print("KernelTests: this CPU lacks AVX2/FMA/F16C; only the portable attention runs here")
            return
        }
        var rng = SeededGenerator(seed: 31)
        for headDim in [64, 256, 72, 60] {
            for span in [1, 3, 4, 37, 300] {
                for softcap: Float in [0, 50] {
                    let stride = 2 * headDim
                    let keys = (0..<span * stride).map { _ in Float(rng.nextUnit() * 4 - 2) }
                    let values = (0..<span * stride).map { _ in Float(rng.nextUnit() * 2 - 1) }
                    let q = (0..<headDim).map { _ in Float(rng.nextUnit() - 0.5) }
                    for (type, width) in [(Int32(CK_KV_F32), 4), (Int32(CK_KV_BF16), 2), (Int32(CK_KV_I8), 1)] {
                        let (k, ks) = cacheRows(keys, type: type, width: width, rows: span, rowStride: stride)
                        let (v, vs) = cacheRows(values, type: type, width: width, rows: span, rowStride: stride)
                        var scratch = [Float](repeating: 0, count: span)
                        func run(_ limit: Int32) -> [Float] {
                            ck_set_thread_isa_limit(limit)
                            defer { ck_set_thread_isa_limit(-1) }
                            var out = [Float](repeating: 0, count: headDim)
                            // Without a cap, a large scale spreads the scores over hundreds (e^x far below 1e-38).
                            ck_attention(type, q, k, ks, v, vs, Int64(stride), Int64(span), Int64(headDim), softcap > 0 ? 0.125 : 8, softcap,
                                         &scratch, &out)
                            return out
                        }
                        let portable = run(1), fast = run(2)
                        for i in 0..<headDim {
                            #expect(abs(portable[i] - fast[i]) <= 1e-5, "kv \(type) head \(headDim) span \(span) cap \(softcap) [\(i)]: \(portable[i]) vs \(fast[i])")
                        }
                    }
                }
            }
        }
    }
}

extension KernelTests {
    /// Decode attention split into pieces (ck_attention_part, one per piece, then ck_attention_merge) against
    /// the whole span in one ck_attention, on the portable and AVX2 kernels, for every cache storage, with and
    /// without soft-capping, for head sizes the AVX2 kernel blocks (64, 256), leaves to its fallback (60), and
    /// for pieces as the engine cuts them (2-16, unequal lengths). Each piece's stats are its own softmax's
    /// max and sum; a one-piece "split" is ck_attention exactly. A merge that dropped a piece's weight
    /// l·e^(m − max) would be off by far more than the tolerance.
    @Test func attentionPiecesMerge() throws {
        var rng = SeededGenerator(seed: 47)
        for headDim in [64, 256, 60] {
            for (span, pieces) in [(33, 1), (64, 2), (100, 3), (300, 7), (517, 16)] {
                for softcap: Float in [0, 50] {
                    let stride = 2 * headDim
                    let keys = (0..<span * stride).map { _ in Float(rng.nextUnit() * 4 - 2) }
                    let values = (0..<span * stride).map { _ in Float(rng.nextUnit() * 2 - 1) }
                    let q = (0..<headDim).map { _ in Float(rng.nextUnit() - 0.5) }
                    let scale: Float = softcap > 0 ? 0.125 : 2
                    for (type, width) in [(Int32(CK_KV_F32), 4), (Int32(CK_KV_BF16), 2), (Int32(CK_KV_I8), 1)] {
                        let (k, ks) = cacheRows(keys, type: type, width: width, rows: span, rowStride: stride)
                        let (v, vs) = cacheRows(values, type: type, width: width, rows: span, rowStride: stride)
                        for limit: Int32 in ck_has_avx2() == 1 ? [1, 2] : [1] {
                            ck_set_thread_isa_limit(limit)
                            defer { ck_set_thread_isa_limit(-1) }
                            var scratch = [Float](repeating: 0, count: span)
                            var whole = [Float](repeating: 0, count: headDim)
                            ck_attention(type, q, k, ks, v, vs, Int64(stride), Int64(span), Int64(headDim), scale, softcap, &scratch, &whole)
                            var outs = [Float](repeating: 0, count: pieces * headDim), stats = [Float](repeating: 0, count: 2 * pieces)
                            k.withUnsafeBytes { kb in
                                v.withUnsafeBytes { vb in
                                    ks.withUnsafeBufferPointer { kscales in
                                        vs.withUnsafeBufferPointer { vscales in
                                            outs.withUnsafeMutableBufferPointer { o in
                                                stats.withUnsafeMutableBufferPointer { st in
                                                    for part in 0..<pieces {
                                                        let lo = span * part / pieces, hi = span * (part + 1) / pieces
                                                        ck_attention_part(type, q, kb.baseAddress! + lo * stride * width, kscales.baseAddress! + lo,
                                                                          vb.baseAddress! + lo * stride * width, vscales.baseAddress! + lo, Int64(stride),
                                                                          Int64(hi - lo), Int64(headDim), scale, softcap, &scratch,
                                                                          o.baseAddress! + part * headDim, st.baseAddress! + 2 * part)
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            var merged = [Float](repeating: 0, count: headDim)
                            ck_attention_merge(outs, Int64(headDim), stats, Int64(pieces), Int64(headDim), &merged)
                            let what = "kv \(type) head \(headDim) span \(span) in \(pieces) cap \(softcap) isa \(limit)"
                            if pieces == 1 { #expect(Array(outs[0..<headDim]) == whole, "\(what): one piece is not ck_attention") }
                            #expect(stats[1] >= 1, "\(what): a piece's sum includes its max's e^0")
                            for i in 0..<headDim { #expect(abs(merged[i] - whole[i]) <= 1e-5, "\(what) [\(i)]: \(merged[i]) vs \(whole[i])") }
                        }
                    }
                }
            }
        }
    }
}

extension KernelTests {
    /// A prefill block's attention (ck_attention_causal: keys transposed sixteen at a time, shared by the
    /// block's queries) against the portable kernel query by query, for every cache storage, sliding windows
    /// or none, soft-capping or none, and head sizes it takes (64, 256, 48) or leaves to the per-query path
    /// (72); and the same outputs bit for bit however the prompt's queries are split into blocks.
    @Test func causalAttentionBlocks() throws {
        guard ck_has_avx2() == 1 else {
            print("KernelTests: this CPU lacks AVX2/FMA/F16C; only the portable causal attention runs here")
            return
        }
        var rng = SeededGenerator(seed: 53)
        let positions = 45
        for headDim in [64, 256, 48, 72] {
            let rowStride = 2 * headDim
            let keys = (0..<positions * rowStride).map { _ in Float(rng.nextUnit() * 4 - 2) }
            let values = (0..<positions * rowStride).map { _ in Float(rng.nextUnit() * 2 - 1) }
            let queries = (0..<positions * headDim).map { _ in Float(rng.nextUnit() - 0.5) }
            for (type, width) in [(Int32(CK_KV_F32), 4), (Int32(CK_KV_BF16), 2), (Int32(CK_KV_I8), 1)] {
                let (k, ks) = cacheRows(keys, type: type, width: width, rows: positions, rowStride: rowStride)
                let (v, vs) = cacheRows(values, type: type, width: width, rows: positions, rowStride: rowStride)
                for window in [0, 20] {
                    for softcap: Float in [0, 50] {
                        let scale: Float = softcap > 0 ? 0.125 : 2
                        /// All positions' outputs, the prompt split into blocks of `block` queries.
                        func run(_ limit: Int32, block: Int) -> [Float] {
                            ck_set_thread_isa_limit(limit)
                            defer { ck_set_thread_isa_limit(-1) }
                            var out = [Float](repeating: 0, count: positions * headDim)
                            var scratch = [Float](repeating: 0, count: block * (positions + 16) + 16 * headDim)
                            for first in stride(from: 0, to: positions, by: block) {
                                let n = min(block, positions - first)
                                queries.withUnsafeBufferPointer { q in
                                    out.withUnsafeMutableBufferPointer { o in
                                        ck_attention_causal(type, q.baseAddress! + first * headDim, Int64(headDim), Int64(n), Int64(first),
                                                            Int64(window), k, ks, v, vs, Int64(rowStride), Int64(headDim), scale, softcap, &scratch,
                                                            o.baseAddress! + first * headDim, Int64(headDim))
                                    }
                                }
                            }
                            return out
                        }
                        let portable = run(1, block: 7), fast = run(2, block: 16)
                        let what = "kv \(type) head \(headDim) window \(window) cap \(softcap)"
                        for i in 0..<positions * headDim where abs(portable[i] - fast[i]) > 1e-5 {
                            Issue.record("\(what) position \(i / headDim) [\(i % headDim)]: \(portable[i]) vs \(fast[i])")
                            break
                        }
                        for block in [1, 5, 13] {
                            let split = run(2, block: block)
                            let differing = (0..<split.count).filter { split[$0].bitPattern != fast[$0].bitPattern }.count
                            #expect(differing == 0, "\(what): \(differing) outputs of blocks of \(block) differ from blocks of 16")
                        }
                    }
                }
            }
        }
    }
}

extension KernelTests {
    /// Q5_0 at its extremes (every value 31, the fifth bit set everywhere; activations all ±127): a packed
    /// block's 16-bit pair sums reach 2·31·127, so the AVX2 product must widen them every four, reading the
    /// packed nibbles or the group expanded to bytes.
    @Test func packedQ5_0Extremes() throws {
        guard ck_has_avx2() == 1 else {
            print("KernelTests: this CPU lacks AVX2/FMA/F16C; packed int8 products are not used here (skipping)")
            return
        }
        // 4608 values a row: past the kernel's stack scratch for an expanded group (4096).
        for columns in [256, 4608] {
            let rows = 8, rowBytes = columns / 32 * 22
            // Block: f16 d = 1 (0x3C00), 32 fifth bits, 16 bytes of nibbles; all bits set gives 31 - 16 = 15.
            var block = [UInt8](repeating: 0xFF, count: 22)
            block[0] = 0x00; block[1] = 0x3C
            let weights = Array((0..<rows * columns / 32).map { _ in block }.joined())
            let t = CPUKernels.ggmlType(.q5_0)
            var packed = [UInt8](repeating: 0, count: Int(ck_r8_size(t, Int64(rows), Int64(columns))))
            #expect(ck_r8_pack(t, weights, Int64(rowBytes), Int64(rows), Int64(columns), &packed) == 0)
            // Four vectors read the packed nibbles and fifth bits directly; nine, each group expanded to bytes once.
            for (sign, batch): (Float, Int) in [(1, 4), (-1, 4), (1, 9), (-1, 9)] {
                let (q, stride) = quantized([Float](repeating: sign, count: batch * columns), columns: columns, batch: batch)
                var y = [Float](repeating: 0, count: batch * rows)
                #expect(ck_matmul_r8(t, packed, Int64(columns), q, Int64(stride), &y, Int64(rows), Int64(batch), 1, 0, Int64(rows)) == 0)
                // 15 · (±127 · 1/127) per value, summed over the row: ±15 · columns, up to float rounding of the scale.
                for v in y { #expect(abs(v - sign * 15 * Float(columns)) <= 1e-3 * 15 * Float(columns), "sign \(sign) batch \(batch): \(v)") }
            }
        }
    }
}

extension KernelTests {
    /// Weights packed eight rows at a time (ck_r8_pack) give the per-row int8 products to float rounding,
    /// bit-identically at every batch size, for every row range a thread may take (multiples of 8); shapes
    /// and types the layout does not cover are refused.
    @Test(arguments: [TensorType.q4_0, .q4_1, .q5_0, .q8_0, .q4_K, .q6_K])
    func packedInt8Products(_ type: TensorType) throws {
        guard ck_has_avx2() == 1 else {
            print("KernelTests: this CPU lacks AVX2/FMA/F16C; packed int8 products are not used here (skipping)")
            return
        }
        var rng = SeededGenerator(seed: 47)
        let rows = 24, columns = type == .q4_K || type == .q6_K ? 512 : 320
        let (weights, rowBytes, t) = randomMatrix(type, rows: rows, columns: columns, rng: &rng)
        let x = (0..<16 * columns).map { _ in rng.nextUnit() * 2 - 1 }
        let (q, stride) = quantized(x, columns: columns, batch: 16)
        var perRow = [Float](repeating: 0, count: 16 * rows)
        ck_force_generic(1)
        _ = ck_matmul_q8(t, weights, Int64(rowBytes), Int64(columns), q, Int64(stride), &perRow, Int64(rows), 16, 1, 0, Int64(rows))
        ck_force_generic(0)
        let size = ck_r8_size(t, Int64(rows), Int64(columns))
        // Bytes per 32 values, packed (the source's or a little more: see kernels_x86_r8.c).
        let perBlock: [TensorType: Int] = [.q4_0: 20, .q4_1: 20, .q5_0: 24, .q8_0: 34, .q4_K: 24, .q6_K: 40]
        #expect(size == Int64(rows * columns / 32 * perBlock[type]!))
        var packed = [UInt8](repeating: 0, count: Int(size))
        #expect(ck_r8_pack(t, weights, Int64(rowBytes), Int64(rows), Int64(columns), &packed) == 0)
        func run(_ batch: Int, rows range: Range<Int> = 0..<24) -> [Float] {
            var y = [Float](repeating: 0, count: batch * rows)
            #expect(ck_matmul_r8(t, packed, Int64(columns), q, Int64(stride), &y, Int64(rows), Int64(batch), 1, Int64(range.lowerBound), Int64(range.upperBound)) == 0)
            return y
        }
        let full = run(16)
        // Both sum exact integers per block and differ only in the order of the float sums, so the bound is a
        // few ulps of Σ|w·x| (the terms cancel, so not of the result).
        var row = [Float](repeating: 0, count: columns)
        for r in 0..<rows {
            weights.withUnsafeBytes { Dequantize.run(type, $0.baseAddress! + r * rowBytes, count: columns, into: &row) }
            for b in 0..<16 {
                var magnitude: Float = 0
                for c in 0..<columns { magnitude += abs(row[c] * x[b * columns + c]) }
                let i = b * rows + r
                #expect(abs(full[i] - perRow[i]) <= 1e-5 * max(1, magnitude), "\(type) b \(b) r \(r): packed \(full[i]) vs per-row \(perRow[i])")
            }
        }
        for batch in [1, 2, 3, 4, 5, 9] { #expect(Array(full[0..<batch * rows]) == run(batch), "\(type) batch \(batch) vs 16") }
        let pieces = run(5, rows: 0..<8)
        let rest = run(5, rows: 8..<24)
        for b in 0..<5 {
            for r in 0..<rows {
                #expect((r < 8 ? pieces : rest)[b * rows + r] == full[b * rows + r], "\(type) split at row 8: b \(b) r \(r)")
            }
        }
        var y = [Float](repeating: 0, count: rows)
        #expect(ck_matmul_r8(t, packed, Int64(columns), q, Int64(stride), &y, Int64(rows), 1, 1, 4, 12) == -1, "row ranges must be whole groups of 8")
        #expect(ck_r8_size(t, 12, Int64(columns)) == -1, "rows must be a multiple of 8")
        #expect(ck_r8_size(CPUKernels.ggmlType(.q4_K), 8, 288) == -1, "K-quant rows must be whole super-blocks")
        #expect(ck_r8_size(CPUKernels.ggmlType(.q5_K), 8, 256) == -1 && ck_r8_size(CPUKernels.ggmlType(.f32), 8, 256) == -1)
    }
}

extension KernelTests {
    /// int8x2: activations as a high int8 part and the residual it leaves, quantized again. The products
    /// (per-row portable, and packed) stay within the residual's own bound of the exact product,
    /// Σ_c |w_c|·d_c/2 with d the residual's step (~1/250 of the int8 bound); packed and per-row agree to
    /// float rounding; results are bit-identical at every batch size.
    @Test(arguments: [(TensorType.q4_0, 256), (.q4_1, 256), (.q5_0, 256), (.q8_0, 256), (.q4_K, 512), (.q6_K, 512)])
    func splitInt8Products(_ type: TensorType, _ columns: Int) throws {
        var rng = SeededGenerator(seed: 59)
        let rows = 16
        let (weights, rowBytes, t) = randomMatrix(type, rows: rows, columns: columns, rng: &rng)
        let x = (0..<8 * columns).map { _ in rng.nextUnit() * 2 - 1 }
        let stride = Int(ck_q8_size(Int64(columns)))
        var q = [UInt8](repeating: 0, count: 16 * stride)
        q.withUnsafeMutableBytes { out in
            x.withUnsafeBufferPointer { xb in
                for b in 0..<8 {
                    ck_quantize_q8_split(xb.baseAddress! + b * columns, Int64(columns), out.baseAddress! + 2 * b * stride,
                                         out.baseAddress! + (2 * b + 1) * stride)
                }
            }
        }
        ck_force_generic(1)
        var perRow = [Float](repeating: 0, count: 8 * rows)
        #expect(ck_matmul_q8(t, weights, Int64(rowBytes), Int64(columns), q, Int64(stride), &perRow, Int64(rows), 8, 2, 0, Int64(rows)) == 0)
        ck_force_generic(0)
        var row = [Float](repeating: 0, count: columns)
        for r in 0..<rows {
            weights.withUnsafeBytes { Dequantize.run(type, $0.baseAddress! + r * rowBytes, count: columns, into: &row) }
            for b in 0..<8 {
                var exact: Double = 0, bound: Double = 0, magnitude: Float = 0
                for c in 0..<columns {
                    exact += Double(row[c]) * Double(x[b * columns + c])
                    let step = q.withUnsafeBytes { $0.load(fromByteOffset: (2 * b + 1) * stride + columns + 4 * (c / 32), as: Float.self) }
                    bound += Double(abs(row[c])) * Double(step) / 2
                    magnitude += abs(row[c] * x[b * columns + c])
                }
                let got = perRow[b * rows + r]
                #expect(abs(Double(got) - exact) <= bound + 2e-6 * Double(magnitude), "\(type) b \(b) r \(r): \(got) vs exact \(exact), bound \(bound)")
            }
        }
        let size = ck_r8_size(t, Int64(rows), Int64(columns))
        guard size > 0 else {
            print("KernelTests: packed int8 products are not used on this CPU (skipping the packed int8x2 comparison)")
            return
        }
        var packed = [UInt8](repeating: 0, count: Int(size))
        #expect(ck_r8_pack(t, weights, Int64(rowBytes), Int64(rows), Int64(columns), &packed) == 0)
        func run(_ batch: Int) -> [Float] {
            var y = [Float](repeating: 0, count: batch * rows)
            #expect(ck_matmul_r8(t, packed, Int64(columns), q, Int64(stride), &y, Int64(rows), Int64(batch), 2, 0, Int64(rows)) == 0)
            return y
        }
        let full = run(8)
        for i in 0..<8 * rows { #expect(abs(full[i] - perRow[i]) <= 1e-5 * max(1, abs(perRow[i]) * 50), "\(type) \(i): packed \(full[i]) vs per-row \(perRow[i])") }
        for batch in [1, 2, 3, 5] { #expect(Array(full[0..<batch * rows]) == run(batch), "\(type) batch \(batch) vs 8") }
    }
}

extension KernelTests {
    /// The packed int8 product's AVX-512 VNNI and AMX variants against the AVX2 one: the same integers per
    /// block and the same float operations in the same order, so bit-identical results, for one vector and
    /// for partial and whole 16-vector tiles, int8 and int8x2 (parts 2), and a piece of the rows.
    @Test(arguments: [TensorType.q4_0, .q4_1, .q5_0, .q8_0, .q4_K, .q6_K])
    func packedVariantsMatchAVX2(_ type: TensorType) throws {
        let variants: [(name: String, limit: Int32, runs: Bool)] = [("AVX-512 VNNI", 3, ck_has_avx512_vnni() == 1), ("AMX", 0, ck_has_amx() == 1)]
        for v in variants where !v.runs { print("KernelTests: this CPU does not run \(v.name) (skipping its packed int8 comparison)") }
        guard ck_has_avx2() == 1, variants.contains(where: \.runs) else { return }
        var rng = SeededGenerator(seed: 53)
        let rows = 32, columns = type == .q4_K || type == .q6_K ? 512 : 288
        let (weights, rowBytes, t) = randomMatrix(type, rows: rows, columns: columns, rng: &rng)
        var packed = [UInt8](repeating: 0, count: Int(ck_r8_size(t, Int64(rows), Int64(columns))))
        #expect(ck_r8_pack(t, weights, Int64(rowBytes), Int64(rows), Int64(columns), &packed) == 0)
        let most = 40
        let x = (0..<most * columns).map { _ in rng.nextUnit() * 2 - 1 }
        let (single, stride) = quantized(x, columns: columns, batch: most)
        // int8x2: (high, residual) pairs, one after the other.
        var split = [UInt8](repeating: 0, count: 2 * most * stride)
        split.withUnsafeMutableBytes { out in
            x.withUnsafeBufferPointer { xb in
                for b in 0..<most {
                    ck_quantize_q8_split(xb.baseAddress! + b * columns, Int64(columns), out.baseAddress! + 2 * b * stride, out.baseAddress! + (2 * b + 1) * stride)
                }
            }
        }
        func run(_ limit: Int32, batch: Int, parts: Int32, rows range: Range<Int>) -> [Float] {
            ck_set_thread_isa_limit(limit)
            defer { ck_set_thread_isa_limit(-1) }
            var y = [Float](repeating: -7, count: batch * rows)
            let rc = ck_matmul_r8(t, packed, Int64(columns), parts == 2 ? split : single, Int64(stride), &y, Int64(rows), Int64(batch), parts,
                                  Int64(range.lowerBound), Int64(range.upperBound))
            #expect(rc == 0)
            return y
        }
        for v in variants where v.runs {
            for parts: Int32 in [1, 2] {
                for batch in [1, 3, 4, 7, 8, 9, 16, 17, 31, 40] {
                    for range in [0..<rows, 8..<24] {
                        let reference = run(2, batch: batch, parts: parts, rows: range), got = run(v.limit, batch: batch, parts: parts, rows: range)
                        let differing = zip(reference, got).enumerated().filter { $0.element.0 != $0.element.1 }
                        #expect(differing.isEmpty, "\(v.name) \(type) parts \(parts) batch \(batch) rows \(range): \(differing.count) differ, first at \(differing.first.map { "\($0.offset): \($0.element)" } ?? "")")
                    }
                }
            }
        }
    }
}

extension KernelTests {
    /// The gated activations (SiLU for Llama, tanh GELU for Gemma) against a double-precision reference, on
    /// every kernel variant this CPU runs, from −100 to 100; and a result never depends on where a call's
    /// range ends (the AVX2 tail runs the same eight-wide formula), which batch invariance needs.
    @Test(arguments: [Int32(CK_ACT_SILU), Int32(CK_ACT_GELU_TANH)])
    func gatedActivations(_ kind: Int32) throws {
        var rng = SeededGenerator(seed: 61)
        var x = (0..<997).map { _ in Float(rng.nextUnit() * 24 - 12) }
        x += [0, 1e-4, -1e-4, 0.5, -0.5, 30, -30, 88, -88, 100, -100]
        let up = x.indices.map { _ in Float(rng.nextUnit() * 2 - 1) }
        func reference(_ v: Float) -> Double {
            let d = Double(v)
            let k = kind == Int32(CK_ACT_SILU) ? d : 2 * 0.7978845608028654 * (d + 0.044715 * d * d * d)
            return d / (1 + exp(-k))
        }
        for limit: Int32 in ck_has_avx2() == 1 ? [1, 0] : [1] {
            ck_set_thread_isa_limit(limit)
            defer { ck_set_thread_isa_limit(-1) }
            var y = x
            ck_gated_activation(kind, &y, up, Int64(y.count))
            // The portable tanh form loses relative precision where 1 + tanh u cancels (x ≲ −3); both stay
            // far inside what a feed-forward layer's output can notice.
            let tolerance: Double = limit == 1 ? 1e-4 : 2e-6
            for i in x.indices {
                let want = reference(x[i]) * Double(up[i])
                #expect(abs(Double(y[i]) - want) <= tolerance * max(1e-3, abs(want)), "kind \(kind) limit \(limit) x \(x[i]): \(y[i]) vs \(want)")
            }
            var pieces = x
            pieces.withUnsafeMutableBufferPointer { p in
                up.withUnsafeBufferPointer { u in
                    ck_gated_activation(kind, p.baseAddress!, u.baseAddress!, 13)
                    ck_gated_activation(kind, p.baseAddress! + 13, u.baseAddress! + 13, Int64(x.count - 13))
                }
            }
            #expect(pieces == y, "kind \(kind) limit \(limit): split at 13 differs from one call")
        }
    }
}
