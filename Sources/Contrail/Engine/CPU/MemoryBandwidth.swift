import CKernels
import CShims

/// How fast the engine's threads read memory: the bound on single-stream decode, which reads every weight
/// once per token (tokens/s ≤ this ÷ weight bytes per token). Benchmarks print it beside their figures.
public enum MemoryBandwidth {
    /// Median GB/s of `repeats` reads of a `bytes` buffer (far larger than the caches), split across
    /// `threads` threads in contiguous ranges as the matrix products split their rows.
    public static func read(threads: Int, bytes: Int = 1 << 30, repeats: Int = 5) -> Double {
        let pool = ThreadPool(threads: threads)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { buffer.deallocate() }
        // Touch every page first, so the reads measure memory and not page faults.
        buffer.initializeMemory(as: UInt8.self, repeating: 1, count: bytes)
        let parts = pool.threads, share = bytes / parts / 4096 * 4096
        var rates: [Double] = []
        for _ in 0..<repeats {
            let start = contrail_now_ns()
            pool.run { thread in
                let lo = share * thread, hi = thread == parts - 1 ? bytes : lo + share
                // An opaque C call: the read cannot be optimized away.
                _ = ck_read_sum(buffer + lo, Int64(hi - lo))
            }
            rates.append(Double(bytes) / Double(contrail_now_ns() - start))
        }
        return rates.sorted()[rates.count / 2]
    }
}
