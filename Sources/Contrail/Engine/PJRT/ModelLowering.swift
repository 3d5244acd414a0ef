#if canImport(Glibc)
import Glibc
#endif

/// The shared model description (`ModelConfig` + the checkpoint's layout facts) lowered to StableHLO:
/// the same arithmetic as the CPU engine's forward pass, for every family (Llama, SmolLM2, Gemma 1/2/3),
/// written as whole-sequence tensor programs. Weights are program arguments, in `weightOrder`.
struct ModelLowering {
    /// How weight matrices live on the device (norm vectors are always f32). The program widens them to
    /// f32 where they are used, which XLA fuses into the products.
    enum WeightStorage: String, Sendable {
        case f32, bf16
        /// int8 with one f32 scale per output row (jetstream-pytorch's `--quantize_weights`).
        case int8
    }

    let config: ModelConfig
    let storage: WeightStorage
    let ropeLayout: RopeLayout
    let hasQKNorm: Bool
    let hasPostNorms: Bool
    /// The output projection is the embedding table (one argument serves both).
    let tiedOutput: Bool
    /// Devices of the tensor-parallel group the programs are partitioned over (1: not partitioned).
    let partitions: Int
    let kvStorage: KVCacheStorage

    init(_ weights: ModelWeights, storage: WeightStorage = .f32, kvStorage: KVCacheStorage = .f32, partitions: Int = 1) {
        config = weights.config
        self.storage = storage
        self.kvStorage = kvStorage
        self.partitions = max(1, partitions)
        ropeLayout = weights.ropeLayout
        hasQKNorm = weights.layers.first?.qNorm != nil
        hasPostNorms = weights.layers.first?.postAttnNorm != nil
        tiedOutput = weights.output.tensor.name == weights.tokenEmbedding.tensor.name
    }

    /// Per-layer weight arguments, in order.
    var layerArguments: Int { 9 + (hasQKNorm ? 2 : 0) + (hasPostNorms ? 2 : 0) }

    /// Cut along dimension `d` when its `units` (heads, FFN columns, vocabulary rows) divide among the
    /// partitions; otherwise whole on every device (correct either way: the partitioner keeps the
    /// program's meaning, only memory and collectives differ).
    func split(_ units: Int, along d: Int) -> Sharding { partitions > 1 && units % partitions == 0 ? .split(d) : .replicated }

    /// Decode caches [layers, slots, cache, kvDim] and prefix keys/values [layers, length, kvDim]: by KV head.
    var cacheSharding: Sharding { split(config.kvHeadCount, along: 3) }
    var prefixSharding: Sharding { split(config.kvHeadCount, along: 2) }

    /// The decode caches for `B` slots of `S` positions, as `kvStorage` keeps them.
    func kvCache(slots B: Int, cacheLength S: Int) -> KVCacheLowering {
        KVCacheLowering(storage: kvStorage, layers: config.layerCount, slots: B, length: S, kvDim: config.kvDim, sharding: cacheSharding)
    }

    /// Declares the weight arguments (shapes from the config) and returns them by role, as f32 values.
    /// Tensor parallelism follows Megatron: q/k/v and gate/up are cut by output rows (heads, FFN columns),
    /// o and down by input columns, so each device computes its heads and its part of the FFN and one
    /// all-reduce per block joins them; the embedding and output projection are cut by vocabulary.
    func declareWeights(_ w: inout StableHLOWriter) -> (embedding: HLOValue, layers: [[HLOValue]], outputNorm: HLOValue, output: HLOValue) {
        let c = config
        let store = storage
        func matrix(_ rows: Int, _ columns: Int, _ sharding: Sharding) -> HLOValue {
            switch store {
            case .f32: return w.argument([rows, columns], sharding: sharding)
            case .bf16: return w.convert(w.argument([rows, columns], "bf16", sharding: sharding), to: "f32")
            case .int8:
                // One scale per output row: cut with the rows, whole when the columns are cut.
                let q = w.convert(w.argument([rows, columns], "i8", sharding: sharding), to: "f32")
                let scales = w.argument([rows], sharding: sharding == .split(0) ? .split(0) : .replicated)
                return w.mul(q, w.broadcast(scales, to: [rows, columns], dims: [0]))
            }
        }
        let vocabRows = split(c.vocabSize, along: 0)
        let embedding = matrix(c.vocabSize, c.dim, vocabRows)
        let headRows = split(c.headCount, along: 0), kvHeadRows = split(c.kvHeadCount, along: 0), headColumns = split(c.headCount, along: 1)
        let ffnRows = split(c.ffnDim, along: 0), ffnColumns = split(c.ffnDim, along: 1)
        var layers: [[HLOValue]] = []
        for _ in 0..<c.layerCount {
            var l = [w.argument([c.dim]), matrix(c.qDim, c.dim, headRows), matrix(c.kvDim, c.dim, kvHeadRows), matrix(c.kvDim, c.dim, kvHeadRows),
                     matrix(c.dim, c.qDim, headColumns), w.argument([c.dim]), matrix(c.ffnDim, c.dim, ffnRows), matrix(c.ffnDim, c.dim, ffnRows),
                     matrix(c.dim, c.ffnDim, ffnColumns)]
            if hasQKNorm { l += [w.argument([c.headDim]), w.argument([c.headDim])] }
            if hasPostNorms { l += [w.argument([c.dim]), w.argument([c.dim])] }
            layers.append(l)
        }
        let outputNorm = w.argument([c.dim])
        let output = tiedOutput ? embedding : matrix(c.vocabSize, c.dim, vocabRows)
        return (embedding, layers, outputNorm, output)
    }

    /// Each weight argument's sharding, in declaration order (what `weightArrays` must be cut by).
    var weightShardings: [Sharding] {
        var w = StableHLOWriter(partitions: partitions)
        _ = declareWeights(&w)
        return w.argumentShardings
    }

    /// One host array to upload: f32, bf16 bits, or int8 values.
    enum HostArray {
        case f32([Float]), bf16([UInt16]), i8([Int8])

        var byteCount: Int {
            switch self {
            case .f32(let v): 4 * v.count
            case .bf16(let v): 2 * v.count
            case .i8(let v): v.count
            }
        }

        /// Device `i`'s part of an array of `shape` cut `n` ways as `sharding` says, and the part's shape.
        func part(_ i: Int, of n: Int, shape: [Int], _ sharding: Sharding) -> (HostArray, [Int]) {
            guard case .split(let d) = sharding, n > 1 else { return (self, shape) }
            let chunk = shape[d] / n
            let inner = shape[(d + 1)...].reduce(1, *), outer = shape[..<d].reduce(1, *)
            func cut<T>(_ v: [T]) -> [T] {
                var out: [T] = []
                out.reserveCapacity(v.count / n)
                for o in 0..<outer {
                    let start = (o * shape[d] + i * chunk) * inner
                    out.append(contentsOf: v[start..<start + chunk * inner])
                }
                return out
            }
            var partShape = shape
            partShape[d] = chunk
            switch self {
            case .f32(let v): return (.f32(cut(v)), partShape)
            case .bf16(let v): return (.bf16(cut(v)), partShape)
            case .i8(let v): return (.i8(cut(v)), partShape)
            }
        }
    }

    /// The weight arguments' host data in declaration order (int8 GGUF/jetstream rows times their scales
    /// first; Gemma's norm offset applied), stored as `storage` says.
    static func weightArrays(_ weights: ModelWeights, _ lowering: ModelLowering) -> [(HostArray, [Int])] {
        let offset: Float = weights.normWeightsNeedOffset ? 1 : 0
        func norm(_ t: Tensor) -> [(HostArray, [Int])] { [(.f32(t.floats().map { $0 + offset }), [t.elementCount])] }
        func matrix(_ m: WeightMatrix) -> [(HostArray, [Int])] {
            let (rows, columns) = (m.tensor.rows, m.tensor.columns)
            var v = m.tensor.floats()
            if let s = m.scales?.floats() {
                for r in 0..<rows { for c in 0..<columns { v[r * columns + c] *= s[r] } }
            }
            switch lowering.storage {
            case .f32: return [(.f32(v), [rows, columns])]
            case .bf16: return [(.bf16(v.map(bfloat16)), [rows, columns])]
            case .int8:
                var q = [Int8](repeating: 0, count: v.count), scales = [Float](repeating: 0, count: rows)
                for r in 0..<rows {
                    var top: Float = 0
                    for c in 0..<columns { top = max(top, abs(v[r * columns + c])) }
                    let scale = top > 0 ? top / 127 : 1
                    scales[r] = scale
                    for c in 0..<columns { q[r * columns + c] = Int8((v[r * columns + c] / scale).rounded().clamped(-127, 127)) }
                }
                return [(.i8(q), [rows, columns]), (.f32(scales), [rows])]
            }
        }
        var out = matrix(weights.tokenEmbedding)
        for l in weights.layers {
            out += norm(l.attnNorm) + matrix(l.wq) + matrix(l.wk) + matrix(l.wv) + matrix(l.wo) + norm(l.ffnNorm) + matrix(l.gate)
                + matrix(l.up) + matrix(l.down)
            if lowering.hasQKNorm, let q = l.qNorm, let k = l.kNorm { out += norm(q) + norm(k) }
            if lowering.hasPostNorms, let a = l.postAttnNorm, let f = l.postFfnNorm { out += norm(a) + norm(f) }
        }
        out += norm(weights.outputNorm)
        if !lowering.tiedOutput { out += matrix(weights.output) }
        return out
    }

    /// Rope inverse frequencies for global (index 0) and local (index 1) layers, with the config's
    /// scaling folded in (linear scaling divides positions, i.e. frequencies, by its factor).
    func inverseFrequencies(frequencyFactors: [Float]?) -> [[Float]] {
        [false, true].map { local in
            config.ropeFrequencies(local: local, frequencyFactors: frequencyFactors, dividingByLinearFactor: true).map { Float($0) }
        }
    }

    /// Prefill of a prompt padded to `length` tokens: arguments are the weights, the two
    /// inverse-frequency vectors, the token ids and the true length (i32 scalar); results are the logits
    /// at the true length's last position [vocab] and every layer's keys and values [layers, length,
    /// kvDim] (rope applied to keys; padding positions hold values nothing reads).
    func prefill(length T: Int) -> String {
        let c = config
        var w = StableHLOWriter(partitions: partitions)
        let weights = declareWeights(&w)
        let invFreq = [w.argument([c.headDim / 2]), w.argument([c.headDim / 2])]
        let tokens = w.argument([T], "i32")
        let trueLength = w.argument([], "i32")
        let positions = w.iota([T], dimension: 0)
        var keys: [HLOValue] = [], values: [HLOValue] = []
        let x = forward(&w, weights, invFreq, tokens, positions) { w, l, q, k, v in
            keys.append(w.reshape(k, [1, T, c.kvDim]))
            values.append(w.reshape(v, [1, T, c.kvDim]))
            return causalAttention(&w, q, k, v, layer: l)
        }
        let lastRow = w.sub(trueLength, w.index(1))
        let last = w.dynamicSlice(x, [lastRow, w.index(0)], sizes: [1, c.dim])
        let logits = w.reshape(outputLogits(&w, weights, last), [c.vocabSize])
        let allKeys = w.concatenate(keys, dimension: 0), allValues = w.concatenate(values, dimension: 0)
        return w.module("prefill_\(T)", returning: [logits, allKeys, allValues], shardings: [.replicated, prefixSharding, prefixSharding])
    }

    /// Copies a prefix's keys and values ([layers, length, kvDim], f32) into slot `slot` (i32 scalar) of
    /// the decode caches (`kvCache`'s arrays, donated: updated in place), converted as they are stored.
    func insert(length T: Int, slots B: Int, cacheLength S: Int) -> String {
        let c = config
        let kv = kvCache(slots: B, cacheLength: S)
        var w = StableHLOWriter(partitions: partitions)
        var caches = kv.declare(&w, donatingFrom: 0)
        let keys = w.argument([c.layerCount, T, c.kvDim], sharding: prefixSharding)
        let values = w.argument([c.layerCount, T, c.kvDim], sharding: prefixSharding)
        let slot = w.argument([], "i32")
        let zero = w.index(0)
        kv.write(&w, &caches, values: false, w.reshape(keys, [c.layerCount, 1, T, c.kvDim]), at: [zero, slot, zero, zero])
        kv.write(&w, &caches, values: true, w.reshape(values, [c.layerCount, 1, T, c.kvDim]), at: [zero, slot, zero, zero])
        return w.module("insert_\(T)", returning: caches, shardings: kv.arrays.map(\.sharding))
    }

    /// One decode step over all `B` slots: arguments are the weights, the inverse frequencies, the
    /// caches (`kvCache`'s arrays, donated), each slot's last token and its position (i32 [B]);
    /// results are the logits [B, vocab] — or, with `greedy`, each slot's most likely token (i32 [B]),
    /// so only ids cross to the host — and the updated caches. Free slots compute values nobody reads.
    ///
    /// `sampling: .device` adds per-slot arguments — temperature (f32 [B]; 0 is greedy), top-k (i32 [B];
    /// 0 is all), top-p and min-p (f32 [B]) and a seed (ui32 [B]) — and picks each slot's token on the
    /// device (`DeviceSampling`): reproducible per request whatever else is in the batch.
    enum StepSampling { case hostLogits, greedy, device }

    func generate(slots B: Int, cacheLength S: Int, sampling: StepSampling = .hostLogits) -> String {
        let c = config
        var w = StableHLOWriter(partitions: partitions)
        let weights = declareWeights(&w)
        let invFreq = [w.argument([c.headDim / 2]), w.argument([c.headDim / 2])]
        let kv = kvCache(slots: B, cacheLength: S)
        var caches = kv.declare(&w, donatingFrom: 1)
        let tokens = w.argument([B], "i32")
        let positions = w.argument([B], "i32")
        // temperature, top-k, top-p, min-p, seed
        let samplingArguments = sampling == .device ? [w.argument([B]), w.argument([B], "i32"), w.argument([B]), w.argument([B]), w.argument([B], "ui32")] : []
        let zero = w.index(0)
        let slotPositions = (0..<B).map { b in w.reshape(w.slice(positions, start: [b], limit: [b + 1]), []) }
        let x = forward(&w, weights, invFreq, tokens, positions) { w, l, q, k, v in
            // Write each slot's new key and value at its position, then attend over the whole cache.
            let layer = w.index(l)
            for b in 0..<B {
                let at = [layer, w.index(b), slotPositions[b], zero]
                kv.write(&w, &caches, values: false, w.reshape(w.slice(k, start: [b, 0, 0], limit: [b + 1, c.kvHeadCount, c.headDim]), [1, 1, 1, c.kvDim]), at: at)
                kv.write(&w, &caches, values: true, w.reshape(w.slice(v, start: [b, 0, 0], limit: [b + 1, c.kvHeadCount, c.headDim]), [1, 1, 1, c.kvDim]), at: at)
            }
            let keys = w.reshape(kv.read(&w, caches, values: false, layer: l), [B, S, c.kvHeadCount, c.headDim])
            let vals = w.reshape(kv.read(&w, caches, values: true, layer: l), [B, S, c.kvHeadCount, c.headDim])
            return cacheAttention(&w, q, keys, vals, positions: positions, layer: l)
        }
        let logits = outputLogits(&w, weights, x)
        let result: HLOValue
        switch sampling {
        case .hostLogits: result = logits
        case .greedy: result = w.argmax(logits)
        case .device:
            let a = samplingArguments
            result = DeviceSampling.sample(&w, logits, temperature: a[0], topK: a[1], topP: a[2], minP: a[3], seed: a[4], positions: positions)
        }
        return w.module("generate_\(B)x\(S)", returning: [result] + caches, shardings: [.replicated] + kv.arrays.map(\.sharding))
    }

    /// The layers over `tokens` at `positions` (i32, one per row); `attend(layer, q, k, v)` gives the
    /// attention output [rows, qDim] from rope'd q [rows, H, hd] and k, v [rows, KVH, hd].
    private func forward(_ w: inout StableHLOWriter, _ weights: (embedding: HLOValue, layers: [[HLOValue]], outputNorm: HLOValue, output: HLOValue),
                         _ invFreq: [HLOValue], _ tokens: HLOValue, _ positions: HLOValue,
                         attend: (inout StableHLOWriter, Int, HLOValue, HLOValue, HLOValue) -> HLOValue) -> HLOValue {
        let c = config
        let T = tokens.shape[0]
        var x = w.gatherRows(weights.embedding, tokens)
        if c.scaleEmbeddings { x = w.mul(x, w.constant(Float(Double(c.dim).squareRoot()), [T, c.dim])) }
        let at = w.convert(positions, to: "f32")
        for l in 0..<c.layerCount {
            let p = weights.layers[l]
            let h = rmsnorm(&w, x, p[0])
            var q = w.reshape(w.dot(h, p[1], contract: ([1], [1])), [T, c.headCount, c.headDim])
            var k = w.reshape(w.dot(h, p[2], contract: ([1], [1])), [T, c.kvHeadCount, c.headDim])
            let v = w.reshape(w.dot(h, p[3], contract: ([1], [1])), [T, c.kvHeadCount, c.headDim])
            if hasQKNorm {
                q = rmsnorm(&w, q, p[9])
                k = rmsnorm(&w, k, p[10])
            }
            let angles = w.dot(w.reshape(at, [T, 1]), w.reshape(invFreq[c.isLocal(layer: l) ? 1 : 0], [1, c.headDim / 2]),
                               contract: ([1], [0]))
            let cos = w.unary("cosine", angles), sin = w.unary("sine", angles)
            q = rope(&w, q, cos, sin)
            k = rope(&w, k, cos, sin)
            var o = w.dot(attend(&w, l, q, k, v), p[4], contract: ([1], [1]))
            if hasPostNorms { o = rmsnorm(&w, o, p[layerArgumentIndex(postAttn: true)]) }
            x = w.add(x, o)
            let h2 = rmsnorm(&w, x, p[5])
            let gate = w.dot(h2, p[6], contract: ([1], [1])), up = w.dot(h2, p[7], contract: ([1], [1]))
            var f = w.dot(w.mul(activation(&w, gate), up), p[8], contract: ([1], [1]))
            if hasPostNorms { f = rmsnorm(&w, f, p[layerArgumentIndex(postAttn: false)]) }
            x = w.add(x, f)
        }
        return x
    }

    /// Final norm, output projection and soft-cap: [rows, dim] → [rows, vocab].
    private func outputLogits(_ w: inout StableHLOWriter, _ weights: (embedding: HLOValue, layers: [[HLOValue]], outputNorm: HLOValue, output: HLOValue),
                              _ x: HLOValue) -> HLOValue {
        var logits = w.dot(rmsnorm(&w, x, weights.outputNorm), weights.output, contract: ([1], [1]))
        if let cap = config.finalLogitSoftcap { logits = softcap(&w, logits, Float(cap)) }
        return logits
    }

    private func layerArgumentIndex(postAttn: Bool) -> Int { 9 + (hasQKNorm ? 2 : 0) + (postAttn ? 0 : 1) }

    /// x · rsqrt(mean(x²) + eps) · weight over the last dimension.
    private func rmsnorm(_ w: inout StableHLOWriter, _ x: HLOValue, _ weight: HLOValue) -> HLOValue {
        let last = x.shape.count - 1, n = x.shape[last]
        let rows = Array(x.shape.dropLast())
        let mean = w.div(w.reduce(w.mul(x, x), "add", dimensions: [last], initial: 0), w.constant(Float(n), rows))
        let scale = w.unary("rsqrt", w.add(mean, w.constant(Float(config.normEps), rows)))
        let scaled = w.mul(x, w.broadcast(scale, to: x.shape, dims: Array(0..<last)))
        return w.mul(scaled, w.broadcast(weight, to: x.shape, dims: [last]))
    }

    /// Rotates each head's pairs — adjacent (interleaved) or (i, i + d/2) (half-split) — by the angles.
    private func rope(_ w: inout StableHLOWriter, _ x: HLOValue, _ cos: HLOValue, _ sin: HLOValue) -> HLOValue {
        let (T, H, D) = (x.shape[0], x.shape[1], x.shape[2])
        let half = D / 2
        let cosB = w.broadcast(cos, to: [T, H, half], dims: [0, 2]), sinB = w.broadcast(sin, to: [T, H, half], dims: [0, 2])
        let a: HLOValue, b: HLOValue
        if ropeLayout == .interleaved {
            let pairs = w.reshape(x, [T, H, half, 2])
            a = w.reshape(w.slice(pairs, start: [0, 0, 0, 0], limit: [T, H, half, 1]), [T, H, half])
            b = w.reshape(w.slice(pairs, start: [0, 0, 0, 1], limit: [T, H, half, 2]), [T, H, half])
        } else {
            a = w.slice(x, start: [0, 0, 0], limit: [T, H, half])
            b = w.slice(x, start: [0, 0, half], limit: [T, H, D])
        }
        let ra = w.sub(w.mul(a, cosB), w.mul(b, sinB)), rb = w.add(w.mul(a, sinB), w.mul(b, cosB))
        if ropeLayout == .interleaved {
            let joined = w.concatenate([w.reshape(ra, [T, H, half, 1]), w.reshape(rb, [T, H, half, 1])], dimension: 3)
            return w.reshape(joined, [T, H, D])
        }
        return w.concatenate([ra, rb], dimension: 2)
    }

    /// Causal (and, on local layers, sliding-window) attention with grouped KV heads; [T, qDim]. Query heads
    /// are grouped under their KV head ([T, KVH, G, hd]) and contracted per KV head, so keys and values are
    /// never copied out to every query head.
    private func causalAttention(_ w: inout StableHLOWriter, _ q: HLOValue, _ k: HLOValue, _ v: HLOValue, layer l: Int) -> HLOValue {
        let c = config
        let T = q.shape[0], KVH = c.kvHeadCount, G = c.kvGroupSize, D = c.headDim
        let grouped = w.reshape(q, [T, KVH, G, D])
        var scores = w.dot(grouped, k, batch: ([1], [1]), contract: ([3], [2]))  // [KVH, T, G, T']
        scores = w.mul(scores, w.constant(Float(1 / c.queryPreAttnScalar.squareRoot()), scores.shape))
        if let cap = c.attnLogitSoftcap { scores = softcap(&w, scores, Float(cap)) }
        let mask = visible(&w, query: w.iota([T, T], dimension: 0), key: w.iota([T, T], dimension: 1), layer: l)
        let probs = maskedSoftmax(&w, scores, w.broadcast(mask, to: scores.shape, dims: [1, 3]))
        let out = w.dot(probs, v, batch: ([0], [1]), contract: ([3], [0]))  // [KVH, T, G, D]
        return w.reshape(w.transpose(out, [1, 0, 2, 3]), [T, c.qDim])
    }

    /// One query per slot against its cache rows [B, S, KVH, hd], up to and including its position,
    /// grouped per KV head as in `causalAttention`.
    private func cacheAttention(_ w: inout StableHLOWriter, _ q: HLOValue, _ keys: HLOValue, _ vals: HLOValue, positions: HLOValue,
                                layer l: Int) -> HLOValue {
        let c = config
        let B = q.shape[0], S = keys.shape[1], KVH = c.kvHeadCount, G = c.kvGroupSize, D = c.headDim
        let grouped = w.reshape(q, [B, KVH, G, D])
        var scores = w.dot(grouped, keys, batch: ([0, 1], [0, 2]), contract: ([3], [3]))  // [B, KVH, G, S]
        scores = w.mul(scores, w.constant(Float(1 / c.queryPreAttnScalar.squareRoot()), scores.shape))
        if let cap = c.attnLogitSoftcap { scores = softcap(&w, scores, Float(cap)) }
        let mask = visible(&w, query: w.broadcast(positions, to: [B, S], dims: [0]), key: w.iota([B, S], dimension: 1), layer: l)
        let probs = maskedSoftmax(&w, scores, w.broadcast(mask, to: scores.shape, dims: [0, 3]))
        let out = w.dot(probs, vals, batch: ([0, 1], [0, 2]), contract: ([3], [1]))  // [B, KVH, G, D]
        return w.reshape(out, [B, c.qDim])
    }

    /// Key position ≤ query position, and within the sliding window on local layers (key ≥ query + 1 − window).
    private func visible(_ w: inout StableHLOWriter, query: HLOValue, key: HLOValue, layer l: Int) -> HLOValue {
        var mask = w.compare(key, query, "LE")
        if config.isLocal(layer: l), let window = config.slidingWindow {
            let lowest = w.sub(query, w.broadcast(w.index(window - 1), to: query.shape, dims: []))
            mask = w.binary("and", mask, w.compare(key, lowest, "GE"))
        }
        return mask
    }

    /// Softmax over the last dimension where `mask` holds (−∞ elsewhere).
    private func maskedSoftmax(_ w: inout StableHLOWriter, _ scores: HLOValue, _ mask: HLOValue) -> HLOValue {
        let shape = scores.shape, last = shape.count - 1, rows = Array(0..<last)
        let masked = w.select(mask, scores, w.constant(-Float.infinity, shape))
        let top = w.broadcast(w.reduce(masked, "maximum", dimensions: [last], initial: -Float.infinity), to: shape, dims: rows)
        let e = w.unary("exponential", w.sub(masked, top))
        return w.div(e, w.broadcast(w.reduce(e, "add", dimensions: [last], initial: 0), to: shape, dims: rows))
    }

    private func activation(_ w: inout StableHLOWriter, _ x: HLOValue) -> HLOValue {
        switch config.activation {
        case .silu:
            return w.mul(x, w.unary("logistic", x))
        case .geluTanh:
            let cube = w.mul(w.mul(x, x), x)
            let inner = w.mul(w.constant(0.797_884_56, x.shape), w.add(x, w.mul(w.constant(0.044_715, x.shape), cube)))
            let t = w.add(w.constant(1, x.shape), w.unary("tanh", inner))
            return w.mul(w.mul(w.constant(0.5, x.shape), x), t)
        }
    }

    private func softcap(_ w: inout StableHLOWriter, _ x: HLOValue, _ cap: Float) -> HLOValue {
        w.mul(w.constant(cap, x.shape), w.unary("tanh", w.div(x, w.constant(cap, x.shape))))
    }
}

/// f32 → bf16 bits, rounding to nearest even (NaN stays NaN).
func bfloat16(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(rounded >> 16)
}

extension Float {
    fileprivate func clamped(_ lo: Float, _ hi: Float) -> Float { Swift.min(Swift.max(self, lo), hi) }
}
