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

    init(_ weights: ModelWeights, storage: WeightStorage = .f32) {
        config = weights.config
        self.storage = storage
        ropeLayout = weights.ropeLayout
        hasQKNorm = weights.layers.first?.qNorm != nil
        hasPostNorms = weights.layers.first?.postAttnNorm != nil
        tiedOutput = weights.output.tensor.name == weights.tokenEmbedding.tensor.name
    }

    /// Per-layer weight arguments, in order.
    var layerArguments: Int { 9 + (hasQKNorm ? 2 : 0) + (hasPostNorms ? 2 : 0) }

    /// Declares the weight arguments (shapes from the config) and returns them by role, as f32 values.
    func declareWeights(_ w: inout StableHLOWriter) -> (embedding: HLOValue, layers: [[HLOValue]], outputNorm: HLOValue, output: HLOValue) {
        let c = config
        let store = storage
        func matrix(_ rows: Int, _ columns: Int) -> HLOValue {
            switch store {
            case .f32: return w.argument([rows, columns])
            case .bf16: return w.convert(w.argument([rows, columns], "bf16"), to: "f32")
            case .int8:
                let q = w.convert(w.argument([rows, columns], "i8"), to: "f32")
                return w.mul(q, w.broadcast(w.argument([rows]), to: [rows, columns], dims: [0]))
            }
        }
        let embedding = matrix(c.vocabSize, c.dim)
        var layers: [[HLOValue]] = []
        for _ in 0..<c.layerCount {
            var l = [w.argument([c.dim]), matrix(c.qDim, c.dim), matrix(c.kvDim, c.dim), matrix(c.kvDim, c.dim),
                     matrix(c.dim, c.qDim), w.argument([c.dim]), matrix(c.ffnDim, c.dim), matrix(c.ffnDim, c.dim),
                     matrix(c.dim, c.ffnDim)]
            if hasQKNorm { l += [w.argument([c.headDim]), w.argument([c.headDim])] }
            if hasPostNorms { l += [w.argument([c.dim]), w.argument([c.dim])] }
            layers.append(l)
        }
        let outputNorm = w.argument([c.dim])
        let output = tiedOutput ? embedding : matrix(c.vocabSize, c.dim)
        return (embedding, layers, outputNorm, output)
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
        var w = StableHLOWriter()
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
        return w.module("prefill_\(T)", returning: [logits, allKeys, allValues])
    }

    /// Copies a prefix's keys and values ([layers, length, kvDim]) into slot `slot` (i32 scalar) of the
    /// decode caches [layers, slots, cache, kvDim], which are donated (updated in place).
    func insert(length T: Int, slots B: Int, cacheLength S: Int) -> String {
        let c = config
        var w = StableHLOWriter()
        let kcache = w.argument([c.layerCount, B, S, c.kvDim], donatedTo: 0)
        let vcache = w.argument([c.layerCount, B, S, c.kvDim], donatedTo: 1)
        let keys = w.argument([c.layerCount, T, c.kvDim]), values = w.argument([c.layerCount, T, c.kvDim])
        let slot = w.argument([], "i32")
        let zero = w.index(0)
        let k = w.dynamicUpdateSlice(kcache, w.reshape(keys, [c.layerCount, 1, T, c.kvDim]), [zero, slot, zero, zero])
        let v = w.dynamicUpdateSlice(vcache, w.reshape(values, [c.layerCount, 1, T, c.kvDim]), [zero, slot, zero, zero])
        return w.module("insert_\(T)", returning: [k, v])
    }

    /// One decode step over all `B` slots: arguments are the weights, the inverse frequencies, the
    /// caches [layers, B, S, kvDim] (donated), each slot's last token and its position (i32 [B]);
    /// results are the logits [B, vocab] — or, with `greedy`, each slot's most likely token (i32 [B]),
    /// so only ids cross to the host — and the updated caches. Free slots compute values nobody reads.
    ///
    /// `sampling: .device` adds per-slot arguments — temperature (f32 [B]; 0 is greedy), top-k (i32 [B];
    /// 0 is all) and a seed (ui32 [B]) — and picks each slot's token on the device by the Gumbel-max trick
    /// over its top-k logits, with noise hashed from (seed, position, token id): reproducible per request
    /// whatever else is in the batch.
    enum StepSampling { case hostLogits, greedy, device }

    func generate(slots B: Int, cacheLength S: Int, sampling: StepSampling = .hostLogits) -> String {
        let c = config
        var w = StableHLOWriter()
        let weights = declareWeights(&w)
        let invFreq = [w.argument([c.headDim / 2]), w.argument([c.headDim / 2])]
        var kcache = w.argument([c.layerCount, B, S, c.kvDim], donatedTo: 1)
        var vcache = w.argument([c.layerCount, B, S, c.kvDim], donatedTo: 2)
        let tokens = w.argument([B], "i32")
        let positions = w.argument([B], "i32")
        let samplingArguments = sampling == .device ? [w.argument([B]), w.argument([B], "i32"), w.argument([B], "ui32")] : []
        let zero = w.index(0)
        let slotPositions = (0..<B).map { b in w.reshape(w.slice(positions, start: [b], limit: [b + 1]), []) }
        let x = forward(&w, weights, invFreq, tokens, positions) { w, l, q, k, v in
            // Write each slot's new key and value at its position, then attend over the whole cache.
            let layer = w.index(l)
            for b in 0..<B {
                let at = [layer, w.index(b), slotPositions[b], zero]
                kcache = w.dynamicUpdateSlice(kcache, w.reshape(w.slice(k, start: [b, 0, 0], limit: [b + 1, c.kvHeadCount, c.headDim]), [1, 1, 1, c.kvDim]), at)
                vcache = w.dynamicUpdateSlice(vcache, w.reshape(w.slice(v, start: [b, 0, 0], limit: [b + 1, c.kvHeadCount, c.headDim]), [1, 1, 1, c.kvDim]), at)
            }
            let keys = w.reshape(w.slice(kcache, start: [l, 0, 0, 0], limit: [l + 1, B, S, c.kvDim]), [B, S, c.kvHeadCount, c.headDim])
            let vals = w.reshape(w.slice(vcache, start: [l, 0, 0, 0], limit: [l + 1, B, S, c.kvDim]), [B, S, c.kvHeadCount, c.headDim])
            return cacheAttention(&w, q, keys, vals, positions: positions, layer: l)
        }
        let logits = outputLogits(&w, weights, x)
        let result: HLOValue
        switch sampling {
        case .hostLogits: result = logits
        case .greedy: result = w.argmax(logits)
        case .device: result = sample(&w, logits, temperature: samplingArguments[0], topK: samplingArguments[1], seed: samplingArguments[2],
                                      positions: positions)
        }
        return w.module("generate_\(B)x\(S)", returning: [result, kcache, vcache])
    }

    /// Per-slot sampling of [B, V] logits: argmax(logits / T + Gumbel noise) among the top-k logits, or
    /// plain argmax where T is 0.
    private func sample(_ w: inout StableHLOWriter, _ logits: HLOValue, temperature: HLOValue, topK: HLOValue, seed: HLOValue,
                        positions: HLOValue) -> HLOValue {
        let (B, V) = (logits.shape[0], logits.shape[1])
        // The k-th largest logit of each row (k = 0 or ≥ V: the smallest, so every token stays).
        let vocab = w.broadcast(w.index(V), to: [B], dims: [])
        let k = w.select(w.binary("or", w.compare(topK, w.broadcast(w.index(0), to: [B], dims: []), "LE"), w.compare(topK, vocab, "GT")), vocab, topK)
        let sorted = w.sortDescending(logits)
        let kth = w.sub(k, w.broadcast(w.index(1), to: [B], dims: []))
        let atK = w.compare(w.iota([B, V], dimension: 1), w.broadcast(kth, to: [B, V], dims: [0]), "EQ")
        let threshold = w.reduce(w.select(atK, sorted, w.constant(-Float.infinity, [B, V])), "maximum", dimensions: [1], initial: -Float.infinity)
        let allowed = w.compare(logits, w.broadcast(threshold, to: [B, V], dims: [0]), "GE")
        // Uniform noise in (0, 1) from a 32-bit hash of (seed, position, token id).
        func u(_ v: UInt32) -> HLOValue { w.broadcast(w.unsigned(v), to: [B, V], dims: []) }
        let id = w.convert(w.iota([B, V], dimension: 1), to: "ui32")
        let pos = w.broadcast(w.convert(positions, to: "ui32"), to: [B, V], dims: [0])
        var h = w.binary("xor", w.broadcast(seed, to: [B, V], dims: [0]), w.mul(id, u(0x9E37_79B9)))
        h = w.binary("xor", h, w.mul(pos, u(0x85EB_CA6B)))
        for (shift, factor) in [(UInt32(16), UInt32(0x7FEB_352D)), (15, 0x846C_A68B)] {
            h = w.mul(w.binary("xor", h, w.binary("shift_right_logical", h, u(shift))), u(factor))
        }
        h = w.binary("xor", h, w.binary("shift_right_logical", h, u(16)))
        let unit = w.add(w.mul(w.convert(w.binary("shift_right_logical", h, u(8)), to: "f32"), w.constant(1.0 / 16_777_216, [B, V])),
                         w.constant(1.0 / 33_554_432, [B, V]))
        let gumbel = w.unary("negate", w.unary("log", w.unary("negate", w.unary("log", unit))))
        let hot = w.compare(temperature, w.constant(0, [B]), "GT")
        let safeT = w.select(hot, temperature, w.constant(1, [B]))
        let scored = w.add(w.div(logits, w.broadcast(safeT, to: [B, V], dims: [0])), gumbel)
        let sampled = w.argmax(w.select(allowed, scored, w.constant(-Float.infinity, [B, V])))
        return w.select(hot, sampled, w.argmax(logits))
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

    /// Causal (and, on local layers, sliding-window) attention with grouped KV heads; [T, qDim].
    private func causalAttention(_ w: inout StableHLOWriter, _ q: HLOValue, _ k: HLOValue, _ v: HLOValue, layer l: Int) -> HLOValue {
        let c = config
        let T = q.shape[0], H = c.headCount, G = c.kvGroupSize, D = c.headDim
        func expand(_ t: HLOValue) -> HLOValue {
            w.reshape(w.broadcast(t, to: [T, c.kvHeadCount, G, D], dims: [0, 1, 3]), [T, H, D])
        }
        let keys = expand(k), vals = expand(v)
        var scores = w.dot(q, keys, batch: ([1], [1]), contract: ([2], [2]))  // [H, T, T]
        scores = w.mul(scores, w.constant(Float(1 / c.queryPreAttnScalar.squareRoot()), [H, T, T]))
        if let cap = c.attnLogitSoftcap { scores = softcap(&w, scores, Float(cap)) }
        let mask = visible(&w, query: w.iota([T, T], dimension: 0), key: w.iota([T, T], dimension: 1), layer: l)
        let probs = maskedSoftmax(&w, scores, w.broadcast(mask, to: [H, T, T], dims: [1, 2]))
        let out = w.dot(probs, vals, batch: ([0], [1]), contract: ([2], [0]))  // [H, T, D]
        return w.reshape(w.transpose(out, [1, 0, 2]), [T, c.qDim])
    }

    /// One query per slot against its cache rows [B, S, KVH, hd], up to and including its position.
    private func cacheAttention(_ w: inout StableHLOWriter, _ q: HLOValue, _ keys: HLOValue, _ vals: HLOValue, positions: HLOValue,
                                layer l: Int) -> HLOValue {
        let c = config
        let B = q.shape[0], S = keys.shape[1], H = c.headCount, G = c.kvGroupSize, D = c.headDim
        func expand(_ t: HLOValue) -> HLOValue {
            w.reshape(w.broadcast(t, to: [B, S, c.kvHeadCount, G, D], dims: [0, 1, 2, 4]), [B, S, H, D])
        }
        var scores = w.dot(q, expand(keys), batch: ([0, 1], [0, 2]), contract: ([2], [3]))  // [B, H, S]
        scores = w.mul(scores, w.constant(Float(1 / c.queryPreAttnScalar.squareRoot()), [B, H, S]))
        if let cap = c.attnLogitSoftcap { scores = softcap(&w, scores, Float(cap)) }
        let mask = visible(&w, query: w.broadcast(positions, to: [B, S], dims: [0]), key: w.iota([B, S], dimension: 1), layer: l)
        let probs = maskedSoftmax(&w, scores, w.broadcast(mask, to: [B, H, S], dims: [0, 2]))
        let out = w.dot(probs, expand(vals), batch: ([0, 1], [0, 2]), contract: ([2], [1]))  // [B, H, D]
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
