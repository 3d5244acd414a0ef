import CKernels

#if canImport(Glibc)
import Glibc
#endif

/// The CPU backend's operations on f32 activations; weight matrices are read in their stored format.
enum CPUKernels {
    /// `CONTRAIL_ISA=generic|avx2|avx512` caps the kernels used (A/B measurements, working around a CPU that
    /// advertises more than it runs); unset: the best the CPU has.
    static func applyISAOverride() {
        guard let v = getenv("CONTRAIL_ISA").map({ String(cString: $0) }) else { return }
        switch v {
        case "generic": ck_set_isa_limit(1)
        case "avx2": ck_set_isa_limit(2)
        case "avx512": ck_set_isa_limit(3)
        default: ck_set_isa_limit(0)
        }
    }

    static func ggmlType(_ t: TensorType) -> Int32 {
        switch t {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q5_0: return 6
        case .q5_1: return 7
        case .q8_0: return 8
        case .q4_K: return 12
        case .q5_K: return 13
        case .q6_K: return 14
        case .i8: return 24
        case .bf16: return 30
        }
    }

    /// One matrix product of a set that shares its input: W·X into `y` (rows `yStride` apart), times
    /// per-row `scales` for int8 weights.
    struct Product {
        let w: WeightMatrix
        let y: UnsafeMutablePointer<Float>
        let yStride: Int
        let scales: UnsafePointer<Float>?
    }

    /// Y[b] = W·X[b] for `batch` vectors (X rows `xStride` apart, Y rows `yStride` apart), reading each
    /// weight row once for the whole batch; rows split across `pool`.
    static func matmul(_ w: WeightMatrix, _ x: UnsafePointer<Float>, xStride: Int, _ y: UnsafeMutablePointer<Float>, yStride: Int,
                       batch: Int, scales: UnsafePointer<Float>?, int8: Int8Products? = nil, pool: ThreadPool) {
        matmul([Product(w: w, y: y, yStride: yStride, scales: scales)], x, xStride: xStride, batch: batch, int8: int8, pool: pool)
    }

    /// Several products of one input (q/k/v, gate/up) in one parallel pass over all their rows: one hand-off
    /// to the threads instead of one each, and the input quantized once. With `int8`
    /// (ActivationPrecision.int8 / .int8x2), weights that have integer kernels read the activations quantized
    /// to int8 (in one or two parts), from their eight-row packed copy where there is one, else row by row.
    static func matmul(_ products: [Product], _ x: UnsafePointer<Float>, xStride: Int, batch: Int, int8: Int8Products?, pool: ThreadPool) {
        let columns = products[0].w.columns
        // Pieces of whole groups of eight rows (the packed kernels' unit; the others take row pairs), so
        // every matrix's rows must be whole groups for the pieces to fall on its group boundaries.
        if products.count > 1 && products.contains(where: { $0.w.rows % 8 != 0 }) {
            for p in products { matmul([p], x, xStride: xStride, batch: batch, int8: int8, pool: pool) }
            return
        }
        // Plain values for the threads: copying a Tensor inside the loop would retain and release its
        // name, shape and file on both threads at once (one contended cache line per object).
        struct Part {
            let type: Int32, data: UnsafeRawPointer, rowBytes: Int, packed: UnsafeRawPointer?, integer: Bool
            let y: UnsafeMutablePointer<Float>, yStride: Int, scales: UnsafePointer<Float>?, first: Int, end: Int
        }
        var parts: [Part] = []
        var first = 0
        for p in products {
            let t = p.w.tensor, type = ggmlType(t.type)
            let integer = int8 != nil && ck_q8_supports(type, Int64(columns)) == 1
            parts.append(Part(type: type, data: t.data, rowBytes: t.rowBytes, packed: integer ? int8?.packed(p.w) : nil, integer: integer,
                              y: p.y, yStride: p.yStride, scales: p.scales, first: first, end: first + t.rows))
            first += t.rows
        }
        if let int8, parts.contains(where: \.integer) {
            let split = int8.parts, stride = int8.stride, scratch = int8.scratch
            pool.parallelFor(batch, minimumPerThread: 8) { r in
                for b in r {
                    let out = scratch + b * split * stride
                    if split == 2 { ck_quantize_q8_split(x + b * xStride, Int64(columns), out, out + stride) }
                    else { ck_quantize_q8(x + b * xStride, Int64(columns), out) }
                }
            }
        }
        let scratch = int8?.scratch, qStride = Int64(int8?.stride ?? 0), qParts = Int32(int8?.parts ?? 1)
        parts.withUnsafeBufferPointer { parts in
            pool.parallelFor(first, minimumPerThread: max(1, 32_768 / max(1, columns * batch)), alignment: 8) { piece in
                for p in parts {
                    let lo = max(piece.lowerBound, p.first) - p.first, hi = min(piece.upperBound, p.end) - p.first
                    guard lo < hi else { continue }
                    if p.integer, let scratch {
                        if let packed = p.packed {
                            _ = ck_matmul_r8(p.type, packed, Int64(columns), scratch, qStride, p.y, Int64(p.yStride), Int64(batch), qParts,
                                             Int64(lo), Int64(hi))
                        } else {
                            _ = ck_matmul_q8(p.type, p.data, Int64(p.rowBytes), Int64(columns), scratch, qStride, p.y, Int64(p.yStride),
                                             Int64(batch), qParts, Int64(lo), Int64(hi))
                        }
                    } else {
                        _ = ck_matmul(p.type, p.data, Int64(p.rowBytes), Int64(columns), x, Int64(xStride), p.y, Int64(p.yStride), Int64(batch),
                                      Int64(lo), Int64(hi))
                    }
                    if let scales = p.scales { for b in 0..<batch { for r in lo..<hi { p.y[b * p.yStride + r] *= scales[r] } } }
                }
            }
        }
    }

    /// One row of a weight (an embedding lookup), as f32.
    static func row(_ w: WeightMatrix, _ r: Int, into out: UnsafeMutablePointer<Float>, scales: UnsafePointer<Float>?) {
        let t = w.tensor
        _ = ck_dequantize(ggmlType(t.type), t.data + r * t.rowBytes, out, Int64(t.columns))
        if let scales { for c in 0..<t.columns { out[c] *= scales[r] } }
    }

    static func rmsnorm(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int, eps: Float) {
        var ss: Double = 0
        for i in 0..<n { ss += Double(x[i]) * Double(x[i]) }
        let scale = Float(1 / (ss / Double(n) + Double(eps)).squareRoot())
        for i in 0..<n { out[i] = x[i] * scale * w[i] }
    }

    static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var m = -Float.infinity
        for i in 0..<n { m = max(m, x[i]) }
        var sum: Float = 0
        for i in 0..<n {
            x[i] = expf(x[i] - m)
            sum += x[i]
        }
        for i in 0..<n { x[i] /= sum }
    }

    /// Rotates each head's pairs by position: adjacent pairs (interleaved layout) or (i, i + d/2).
    static func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                     layout: RopeLayout) {
        let half = headDim / 2
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<half {
                let (ia, ib) = layout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                let a = v[ia], b = v[ib]
                v[ia] = a * cos[i] - b * sin[i]
                v[ib] = a * sin[i] + b * cos[i]
            }
        }
    }
}

/// What int8 activations need (ActivationPrecision.int8, .int8x2): scratch for up to `batch` vectors of up
/// to `columns` values quantized in `parts` (1, or 2 for int8x2: high and residual), `stride` bytes apart,
/// and the matrices repacked eight rows at a time where the CPU and type allow (ck_r8_pack, once at load;
/// about the originals' size).
final class Int8Products: @unchecked Sendable {
    let stride: Int
    let parts: Int
    let scratch: UnsafeMutableRawPointer
    private var packedByName: [String: UnsafeMutableRawPointer] = [:]
    /// Memory the packed copies take (the mapped originals stay for embedding lookups and are paged out
    /// by the kernel when unused).
    private(set) var packedBytes = 0

    init(_ weights: ModelWeights, columns: Int, batch: Int, parts: Int) {
        stride = (Int(ck_q8_size(Int64(columns))) + 63) / 64 * 64
        self.parts = parts
        scratch = .allocate(byteCount: stride * parts * max(1, batch), alignment: 64)
        for m in weights.productMatrices {
            let t = m.tensor, type = CPUKernels.ggmlType(t.type)
            let size = ck_r8_size(type, Int64(t.rows), Int64(t.columns))
            guard size > 0, packedByName[t.name] == nil else { continue }
            let p = UnsafeMutableRawPointer.allocate(byteCount: Int(size), alignment: 64)
            guard ck_r8_pack(type, t.data, Int64(t.rowBytes), Int64(t.rows), Int64(t.columns), p) == 0 else {
                p.deallocate()
                continue
            }
            packedByName[t.name] = p
            packedBytes += Int(size)
        }
    }

    /// `m` packed for ck_matmul_r8, if it was.
    func packed(_ m: WeightMatrix) -> UnsafeRawPointer? { packedByName[m.tensor.name].map { UnsafeRawPointer($0) } }

    /// Bytes of `m`'s packed copy, if it was packed.
    func packedSize(_ m: WeightMatrix) -> Int? {
        packed(m) == nil ? nil : Int(ck_r8_size(CPUKernels.ggmlType(m.tensor.type), Int64(m.rows), Int64(m.columns)))
    }

    /// How many matrices were packed.
    var packedCount: Int { packedByName.count }

    deinit {
        scratch.deallocate()
        for p in packedByName.values { p.deallocate() }
    }
}
