#if canImport(Glibc)
import Glibc
#endif

/// The shared model description (`ModelConfig` + the checkpoint's layout facts) lowered to StableHLO:
/// the same arithmetic as the CPU engine's forward pass, for every family (Llama, SmolLM2, Gemma 1/2/3),
/// written as whole-sequence tensor programs. Weights are program arguments, in `weightOrder`.
struct ModelLowering {
    let config: ModelConfig
    let ropeLayout: RopeLayout
    let hasQKNorm: Bool
    let hasPostNorms: Bool
    /// The output projection is the embedding table (one argument serves both).
    let tiedOutput: Bool

    init(_ weights: ModelWeights) {
        config = weights.config
        ropeLayout = weights.ropeLayout
        hasQKNorm = weights.layers.first?.qNorm != nil
        hasPostNorms = weights.layers.first?.postAttnNorm != nil
        tiedOutput = weights.output.tensor.name == weights.tokenEmbedding.tensor.name
    }

    /// Per-layer weight arguments, in order.
    var layerArguments: Int { 9 + (hasQKNorm ? 2 : 0) + (hasPostNorms ? 2 : 0) }

    /// Declares the weight arguments (shapes from the config) and returns them by role.
    func declareWeights(_ w: inout StableHLOWriter) -> (embedding: HLOValue, layers: [[HLOValue]], outputNorm: HLOValue, output: HLOValue) {
        let c = config
        let embedding = w.argument([c.vocabSize, c.dim])
        var layers: [[HLOValue]] = []
        for _ in 0..<c.layerCount {
            var l = [w.argument([c.dim]), w.argument([c.qDim, c.dim]), w.argument([c.kvDim, c.dim]), w.argument([c.kvDim, c.dim]),
                     w.argument([c.dim, c.qDim]), w.argument([c.dim]), w.argument([c.ffnDim, c.dim]), w.argument([c.ffnDim, c.dim]),
                     w.argument([c.dim, c.ffnDim])]
            if hasQKNorm { l += [w.argument([c.headDim]), w.argument([c.headDim])] }
            if hasPostNorms { l += [w.argument([c.dim]), w.argument([c.dim])] }
            layers.append(l)
        }
        let outputNorm = w.argument([c.dim])
        let output = tiedOutput ? embedding : w.argument([c.vocabSize, c.dim])
        return (embedding, layers, outputNorm, output)
    }

    /// The host-side weight arrays in argument order (f32; int8 rows times their scales; Gemma's norm
    /// offset applied), each with its shape.
    static func weightArrays(_ weights: ModelWeights, _ lowering: ModelLowering) -> [([Float], [Int])] {
        let offset: Float = weights.normWeightsNeedOffset ? 1 : 0
        func norm(_ t: Tensor) -> ([Float], [Int]) { (t.floats().map { $0 + offset }, [t.elementCount]) }
        func matrix(_ m: WeightMatrix) -> ([Float], [Int]) {
            var v = m.tensor.floats()
            if let s = m.scales?.floats() {
                for r in 0..<m.tensor.rows { for c in 0..<m.tensor.columns { v[r * m.tensor.columns + c] *= s[r] } }
            }
            return (v, [m.tensor.rows, m.tensor.columns])
        }
        var out = [matrix(weights.tokenEmbedding)]
        for l in weights.layers {
            out += [norm(l.attnNorm), matrix(l.wq), matrix(l.wk), matrix(l.wv), matrix(l.wo), norm(l.ffnNorm), matrix(l.gate),
                    matrix(l.up), matrix(l.down)]
            if lowering.hasQKNorm, let q = l.qNorm, let k = l.kNorm { out += [norm(q), norm(k)] }
            if lowering.hasPostNorms, let a = l.postAttnNorm, let f = l.postFfnNorm { out += [norm(a), norm(f)] }
        }
        out.append(norm(weights.outputNorm))
        if !lowering.tiedOutput { out.append(matrix(weights.output)) }
        return out
    }

    /// Rope inverse frequencies for global (index 0) and local (index 1) layers, with the config's
    /// scaling folded in (linear scaling divides positions, i.e. frequencies, by its factor).
    func inverseFrequencies(frequencyFactors: [Float]?) -> [[Float]] {
        let c = config
        return [false, true].map { local in
            let theta = local ? (c.ropeLocalTheta ?? c.ropeTheta) : c.ropeTheta
            return (0..<c.headDim / 2).map { i in
                var freq = 1 / pow(theta, Double(2 * i) / Double(c.headDim))
                if case .linear(let factor) = c.ropeScaling, !local || c.architecture != .gemma3 { freq /= factor }
                if case .llama3(let factor, let low, let high, let original) = c.ropeScaling {
                    let wavelength = 2 * Double.pi / freq
                    let lowWavelength = Double(original) / low, highWavelength = Double(original) / high
                    if wavelength > lowWavelength {
                        freq /= factor
                    } else if wavelength >= highWavelength {
                        let smooth = (Double(original) / wavelength - low) / (high - low)
                        freq = (1 - smooth) * freq / factor + smooth * freq
                    }
                } else if let f = frequencyFactors {
                    freq /= Double(f[i])
                }
                return Float(freq)
            }
        }
    }

    /// Prefill of `length` tokens: arguments are the weights, the two inverse-frequency vectors and the
    /// token ids; results are the last position's logits [vocab] and the keys and values of every layer
    /// [layers, length, kvDim] (rope applied to keys).
    func prefill(length T: Int) -> String {
        let c = config
        var w = StableHLOWriter()
        let weights = declareWeights(&w)
        let invFreq = [w.argument([c.headDim / 2]), w.argument([c.headDim / 2])]
        let tokens = w.argument([T], "i32")
        var x = w.gatherRows(weights.embedding, tokens)
        if c.scaleEmbeddings { x = w.mul(x, w.constant(Float(Double(c.dim).squareRoot()), [T, c.dim])) }
        let positions = w.convert(w.iota([T], dimension: 0), to: "f32")
        var keys: [HLOValue] = [], values: [HLOValue] = []
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
            let angles = w.dot(w.reshape(positions, [T, 1]), w.reshape(invFreq[c.isLocal(layer: l) ? 1 : 0], [1, c.headDim / 2]),
                               contract: ([1], [0]))
            let cos = w.unary("cosine", angles), sin = w.unary("sine", angles)
            q = rope(&w, q, cos, sin)
            k = rope(&w, k, cos, sin)
            keys.append(w.reshape(k, [1, T, c.kvDim]))
            values.append(w.reshape(v, [1, T, c.kvDim]))
            var o = attention(&w, q, k, v, layer: l)
            o = w.dot(o, p[4], contract: ([1], [1]))
            if hasPostNorms { o = rmsnorm(&w, o, p[layerArgumentIndex(postAttn: true)]) }
            x = w.add(x, o)
            let h2 = rmsnorm(&w, x, p[5])
            let gate = w.dot(h2, p[6], contract: ([1], [1])), up = w.dot(h2, p[7], contract: ([1], [1]))
            var f = w.dot(w.mul(activation(&w, gate), up), p[8], contract: ([1], [1]))
            if hasPostNorms { f = rmsnorm(&w, f, p[layerArgumentIndex(postAttn: false)]) }
            x = w.add(x, f)
        }
        let last = rmsnorm(&w, w.slice(x, start: [T - 1, 0], limit: [T, c.dim]), weights.outputNorm)
        var logits = w.reshape(w.dot(last, weights.output, contract: ([1], [1])), [c.vocabSize])
        if let cap = c.finalLogitSoftcap { logits = softcap(&w, logits, Float(cap)) }
        let allKeys = w.concatenate(keys, dimension: 0), allValues = w.concatenate(values, dimension: 0)
        return w.module("prefill_\(T)", returning: [logits, allKeys, allValues])
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
    private func attention(_ w: inout StableHLOWriter, _ q: HLOValue, _ k: HLOValue, _ v: HLOValue, layer l: Int) -> HLOValue {
        let c = config
        let T = q.shape[0], H = c.headCount, G = c.kvGroupSize, D = c.headDim
        func expand(_ t: HLOValue) -> HLOValue {
            w.reshape(w.broadcast(t, to: [T, c.kvHeadCount, G, D], dims: [0, 1, 3]), [T, H, D])
        }
        let keys = expand(k), vals = expand(v)
        var scores = w.dot(q, keys, batch: ([1], [1]), contract: ([2], [2]))  // [H, T, T]
        scores = w.mul(scores, w.constant(Float(1 / c.queryPreAttnScalar.squareRoot()), [H, T, T]))
        if let cap = c.attnLogitSoftcap { scores = softcap(&w, scores, Float(cap)) }
        let row = w.iota([T, T], dimension: 0), col = w.iota([T, T], dimension: 1)
        var mask = w.compare(col, row, "LE")
        if c.isLocal(layer: l), let window = c.slidingWindow {
            // Position j is visible from i when j ≥ i + 1 − window.
            let lowest = w.sub(row, w.broadcast(w.convert(w.constant(Float(window - 1)), to: "i32"), to: [T, T], dims: []))
            mask = w.binary("and", mask, w.compare(col, lowest, "GE"))
        }
        let masked = w.select(w.broadcast(mask, to: [H, T, T], dims: [1, 2]), scores, w.constant(-Float.infinity, [H, T, T]))
        let top = w.broadcast(w.reduce(masked, "maximum", dimensions: [2], initial: -Float.infinity), to: [H, T, T], dims: [0, 1])
        let e = w.unary("exponential", w.sub(masked, top))
        let probs = w.div(e, w.broadcast(w.reduce(e, "add", dimensions: [2], initial: 0), to: [H, T, T], dims: [0, 1]))
        let out = w.dot(probs, vals, batch: ([0], [1]), contract: ([2], [0]))  // [H, T, D]
        return w.reshape(w.transpose(out, [1, 0, 2]), [T, c.qDim])
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
