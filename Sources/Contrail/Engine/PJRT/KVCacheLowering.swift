/// How the decode caches [layers, slots, cache, kvDim] live on the device, and the writes and reads the
/// insert and decode programs make of them: f32, bf16 (half), or int8 with one f32 scale per layer, slot
/// and position over all KV heads (jetstream-pytorch's `--quantize_kv_cache`; a quarter, plus the scales).
/// Keys and values are each one array, or an int8 array and its scales; keys first.
struct KVCacheLowering {
    let storage: KVCacheStorage
    let layers: Int, slots: Int, length: Int, kvDim: Int
    /// The KV-head cut of a tensor-parallel group (the scales stay whole: a token's scale spans all heads).
    let sharding: Sharding

    /// Each cache array's shape, element type and sharding, in argument order.
    var arrays: [(shape: [Int], element: String, sharding: Sharding)] {
        let full = [layers, slots, length, kvDim]
        switch storage {
        case .f32: return [(full, "f32", sharding), (full, "f32", sharding)]
        case .bf16: return [(full, "bf16", sharding), (full, "bf16", sharding)]
        case .int8:
            let scales = [layers, slots, length]
            return [(full, "i8", sharding), (scales, "f32", .replicated), (full, "i8", sharding), (scales, "f32", .replicated)]
        }
    }

    /// Bytes of all cache arrays on one device of a group of `devices`.
    func bytes(devices: Int) -> Int {
        arrays.reduce(0) { sum, a in
            let size = a.element == "f32" ? 4 : a.element == "bf16" ? 2 : 1
            return sum + size * a.shape.reduce(1, *) / (a.sharding == .replicated ? 1 : devices)
        }
    }

    /// Declares the cache arguments, each donated to result `firstResult` + its index (updated in place;
    /// nil: not donated).
    func declare(_ w: inout StableHLOWriter, donatingFrom firstResult: Int?) -> [HLOValue] {
        arrays.enumerated().map { i, a in w.argument(a.shape, a.element, donatedTo: firstResult.map { $0 + i }, sharding: a.sharding) }
    }

    /// Where the keys' (or values') array stands in `arrays`; int8 scales follow it.
    private func first(values: Bool) -> Int { values ? (storage == .int8 ? 2 : 1) : 0 }

    /// Keys (`values: false`) or values written into `caches` at `at` (layer, slot, position, 0): `block`
    /// is f32 [layers', slots', positions', kvDim], converted or quantized per token as stored.
    func write(_ w: inout StableHLOWriter, _ caches: inout [HLOValue], values: Bool, _ block: HLOValue, at: [HLOValue]) {
        let i = first(values: values)
        switch storage {
        case .f32: caches[i] = w.dynamicUpdateSlice(caches[i], block, at)
        case .bf16: caches[i] = w.dynamicUpdateSlice(caches[i], w.convert(block, to: "bf16"), at)
        case .int8:
            let rows = Array(block.shape.dropLast()), last = block.shape.count - 1
            // scale = max |x| / 127 over the token's kvDim (1 for an all-zero token, which stores zeros).
            let top = w.reduce(w.unary("abs", block), "maximum", dimensions: [last], initial: 0)
            let scale = w.select(w.compare(top, w.constant(0, rows), "GT"), w.div(top, w.constant(127, rows)), w.constant(1, rows))
            let scaled = w.div(block, w.broadcast(scale, to: block.shape, dims: Array(0..<last)))
            let clamped = w.binary("minimum", w.binary("maximum", w.unary("round_nearest_even", scaled), w.constant(-127, block.shape)),
                                   w.constant(127, block.shape))
            caches[i] = w.dynamicUpdateSlice(caches[i], w.convert(clamped, to: "i8"), at)
            caches[i + 1] = w.dynamicUpdateSlice(caches[i + 1], scale, Array(at.dropLast()))
        }
    }

    /// Layer `l`'s keys or values as f32 [slots, length, kvDim].
    func read(_ w: inout StableHLOWriter, _ caches: [HLOValue], values: Bool, layer l: Int) -> HLOValue {
        let i = first(values: values)
        let (B, S) = (slots, length)
        let stored = w.reshape(w.slice(caches[i], start: [l, 0, 0, 0], limit: [l + 1, B, S, kvDim]), [B, S, kvDim])
        switch storage {
        case .f32: return stored
        case .bf16: return w.convert(stored, to: "f32")
        case .int8:
            let scale = w.reshape(w.slice(caches[i + 1], start: [l, 0, 0], limit: [l + 1, B, S]), [B, S])
            return w.mul(w.convert(stored, to: "f32"), w.broadcast(scale, to: [B, S, kvDim], dims: [0, 1]))
        }
    }
}
