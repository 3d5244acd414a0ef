/// Reference dequantization of every `TensorType` to f32, one row (or any whole number of blocks) at a time.
/// Block layouts are the GGUF format's; the arithmetic order follows ggml's reference so results are
/// bit-comparable with other implementations. The engine's kernels read blocks directly; this is for
/// loading small tensors (norms), tests and `contrail inspect`.
public enum Dequantize {
    @inline(__always) static func f16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    @inline(__always) static func bf16(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// Dequantizes `count` values (a multiple of `type.blockElements`) from `src` into `dst`.
    public static func run(_ type: TensorType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(count % type.blockElements == 0)
        let blocks = count / type.blockElements
        switch type {
        case .f32:
            for i in 0..<count { dst[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16:
            for i in 0..<count { dst[i] = f16(src, 2 * i) }
        case .bf16:
            for i in 0..<count { dst[i] = bf16(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .i8:
            for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
        case .q8_0:
            for b in 0..<blocks { q8_0(src + b * 34, dst + b * 32) }
        case .q4_0:
            for b in 0..<blocks { q4_0(src + b * 18, dst + b * 32) }
        case .q4_1:
            for b in 0..<blocks { q4_1(src + b * 20, dst + b * 32) }
        case .q5_0:
            for b in 0..<blocks { q5_0(src + b * 22, dst + b * 32) }
        case .q5_1:
            for b in 0..<blocks { q5_1(src + b * 24, dst + b * 32) }
        case .q4_K:
            for b in 0..<blocks { q4_K(src + b * 144, dst + b * 256) }
        case .q5_K:
            for b in 0..<blocks { q5_K(src + b * 176, dst + b * 256) }
        case .q6_K:
            for b in 0..<blocks { q6_K(src + b * 210, dst + b * 256) }
        }
    }

    /// Q8_0: f16 scale d, 32 × int8.
    static func q8_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 0)
        for j in 0..<32 { y[j] = Float(x.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
    }

    /// Q4_0: f16 scale d, 16 bytes of nibbles; low nibbles are values 0..15, high nibbles 16..31, offset 8.
    static func q4_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 0)
        for j in 0..<16 {
            let q = x.load(fromByteOffset: 2 + j, as: UInt8.self)
            y[j] = Float(Int(q & 0x0F) - 8) * d
            y[j + 16] = Float(Int(q >> 4) - 8) * d
        }
    }

    /// Q4_1: f16 scale d, f16 min m, 16 bytes of nibbles; value = q·d + m.
    static func q4_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 0), m = f16(x, 2)
        for j in 0..<16 {
            let q = x.load(fromByteOffset: 4 + j, as: UInt8.self)
            y[j] = Float(q & 0x0F) * d + m
            y[j + 16] = Float(q >> 4) * d + m
        }
    }

    /// Q5_0: f16 scale d, 32 high bits (u32), 16 bytes of nibbles; offset 16.
    static func q5_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 0)
        let qh = UInt32(littleEndian: x.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        for j in 0..<16 {
            let q = UInt32(x.load(fromByteOffset: 6 + j, as: UInt8.self))
            let h0 = ((qh >> UInt32(j)) << 4) & 0x10
            let h1 = (qh >> UInt32(j + 12)) & 0x10
            y[j] = Float(Int32((q & 0x0F) | h0) - 16) * d
            y[j + 16] = Float(Int32((q >> 4) | h1) - 16) * d
        }
    }

    /// Q5_1: f16 scale d, f16 min m, 32 high bits, 16 bytes of nibbles; value = q·d + m.
    static func q5_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 0), m = f16(x, 2)
        let qh = UInt32(littleEndian: x.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        for j in 0..<16 {
            let q = UInt32(x.load(fromByteOffset: 8 + j, as: UInt8.self))
            let h0 = ((qh >> UInt32(j)) << 4) & 0x10
            let h1 = (qh >> UInt32(j + 12)) & 0x10
            y[j] = Float((q & 0x0F) | h0) * d + m
            y[j + 16] = Float((q >> 4) | h1) * d + m
        }
    }

    /// The 6-bit scale and min of sub-block `j` (0..7) packed in the 12 `scales` bytes of Q4_K / Q5_K.
    @inline(__always) static func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
        @inline(__always) func b(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 {
            return (Float(b(j) & 63), Float(b(j + 4) & 63))
        }
        let sc = (b(j + 4) & 0x0F) | ((b(j - 4) >> 6) << 4)
        let m = (b(j + 4) >> 4) | ((b(j) >> 6) << 4)
        return (Float(sc), Float(m))
    }

    /// Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins for 8 sub-blocks of 32, 128 bytes of nibbles.
    static func q4_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 0), dmin = f16(x, 2)
        let scales = x + 4
        var q = x + 16
        var out = y
        for pair in 0..<4 {
            let (sc1, m1) = scaleMinK4(2 * pair, scales)
            let (sc2, m2) = scaleMinK4(2 * pair + 1, scales)
            let d1 = d * sc1, min1 = dmin * m1
            let d2 = d * sc2, min2 = dmin * m2
            for l in 0..<32 { out[l] = d1 * Float(q.load(fromByteOffset: l, as: UInt8.self) & 0x0F) - min1 }
            for l in 0..<32 { out[l + 32] = d2 * Float(q.load(fromByteOffset: l, as: UInt8.self) >> 4) - min2 }
            q += 32
            out += 64
        }
    }

    /// Q5_K: like Q4_K with a fifth bit per value from 32 `qh` bytes.
    static func q5_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 0), dmin = f16(x, 2)
        let scales = x + 4
        let qh = x + 16
        var ql = x + 48
        var out = y
        var u1: UInt8 = 1, u2: UInt8 = 2
        for pair in 0..<4 {
            let (sc1, m1) = scaleMinK4(2 * pair, scales)
            let (sc2, m2) = scaleMinK4(2 * pair + 1, scales)
            let d1 = d * sc1, min1 = dmin * m1
            let d2 = d * sc2, min2 = dmin * m2
            for l in 0..<32 {
                let lo = ql.load(fromByteOffset: l, as: UInt8.self), h = qh.load(fromByteOffset: l, as: UInt8.self)
                out[l] = d1 * Float((lo & 0x0F) + (h & u1 != 0 ? 16 : 0)) - min1
                out[l + 32] = d2 * Float((lo >> 4) + (h & u2 != 0 ? 16 : 0)) - min2
            }
            ql += 32
            out += 64
            u1 <<= 2
            u2 <<= 2
        }
    }

    /// Q6_K: 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, f16 d; offset 32.
    static func q6_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16(x, 208)
        var ql = x, qh = x + 128, sc = x + 192
        var out = y
        for _ in 0..<2 {
            for l in 0..<32 {
                let s = l / 16
                let lo0 = ql.load(fromByteOffset: l, as: UInt8.self)
                let lo1 = ql.load(fromByteOffset: l + 32, as: UInt8.self)
                let h = qh.load(fromByteOffset: l, as: UInt8.self)
                let q1 = Int(lo0 & 0x0F | ((h >> 0) & 3) << 4) - 32
                let q2 = Int(lo1 & 0x0F | ((h >> 2) & 3) << 4) - 32
                let q3 = Int(lo0 >> 4 | ((h >> 4) & 3) << 4) - 32
                let q4 = Int(lo1 >> 4 | ((h >> 6) & 3) << 4) - 32
                @inline(__always) func scale(_ i: Int) -> Float { Float(sc.load(fromByteOffset: i, as: Int8.self)) }
                out[l] = d * scale(s) * Float(q1)
                out[l + 32] = d * scale(s + 2) * Float(q2)
                out[l + 64] = d * scale(s + 4) * Float(q3)
                out[l + 96] = d * scale(s + 6) * Float(q4)
            }
            out += 128
            ql += 64
            qh += 32
            sc += 8
        }
    }
}
