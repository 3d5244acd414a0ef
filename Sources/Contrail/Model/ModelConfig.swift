/// The model families Contrail runs. SmolLM2 and other Llama-shaped models are `.llama`.
public enum Architecture: String, Sendable, CaseIterable {
    case llama, gemma, gemma2, gemma3
}

/// How positions stretch beyond the trained context.
public enum RopeScaling: Sendable, Equatable {
    /// Positions divided by `factor` (Gemma 3 global layers in the larger models).
    case linear(factor: Double)
    /// Llama 3.1's per-frequency smoothing between `lowFreqFactor` and `highFreqFactor` wavelengths.
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalContextLength: Int)
}

public enum Activation: String, Sendable {
    /// SwiGLU (Llama).
    case silu
    /// GeGLU with the tanh approximation of GELU (Gemma).
    case geluTanh = "gelu_tanh"
}

/// One description of a transformer that both backends execute. Every family-specific behaviour is a
/// field here, so the engine has no per-family branches beyond reading them.
public struct ModelConfig: Sendable, Equatable {
    public var architecture: Architecture
    public var dim: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var ffnDim: Int
    public var vocabSize: Int
    public var normEps: Double
    public var contextLength: Int
    public var ropeTheta: Double
    /// Rope base of sliding-window (local) layers when it differs from `ropeTheta` (Gemma 3: 10 000).
    public var ropeLocalTheta: Double?
    /// Applies to global layers only in Gemma 3; to all layers in Llama 3.1.
    public var ropeScaling: RopeScaling?
    public var tiedEmbeddings: Bool
    public var activation: Activation
    /// Gemma multiplies embeddings by √dim.
    public var scaleEmbeddings: Bool
    /// Keys attended by a sliding-window layer; nil when every layer is global.
    public var slidingWindow: Int?
    /// Per layer: true when the layer uses the sliding window (Gemma 2 alternates; Gemma 3 has 5 local : 1 global).
    public var localLayers: [Bool]
    /// Attention scores are scaled by 1/√queryPreAttnScalar (Gemma 2/3); defaults to headDim.
    public var queryPreAttnScalar: Double
    public var attnLogitSoftcap: Double?
    public var finalLogitSoftcap: Double?
    /// Gemma 3 normalizes q and k per head before rope.
    public var qkNorm: Bool
    /// Gemma 2/3 normalize the attention and FFN outputs again before the residual add.
    public var postNorms: Bool

    public var qDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }
    public var kvGroupSize: Int { headCount / kvHeadCount }

    public func isLocal(layer: Int) -> Bool { layer < localLayers.count && localLayers[layer] }

    public func ropeTheta(layer: Int) -> Double { isLocal(layer: layer) ? ropeLocalTheta ?? ropeTheta : ropeTheta }

    /// Family defaults that the file formats do not carry. Gemma 3's GGUF stores neither the local rope
    /// base (10 000) nor the 5-local-to-1-global layer pattern, so we know them here.
    public static func defaults(_ architecture: Architecture, dim: Int, layerCount: Int, headCount: Int, kvHeadCount: Int,
                                headDim: Int, ffnDim: Int, vocabSize: Int) -> ModelConfig {
        var c = ModelConfig(
            architecture: architecture, dim: dim, layerCount: layerCount, headCount: headCount, kvHeadCount: kvHeadCount,
            headDim: headDim, ffnDim: ffnDim, vocabSize: vocabSize, normEps: 1e-5, contextLength: 4096,
            ropeTheta: 10_000, ropeLocalTheta: nil, ropeScaling: nil, tiedEmbeddings: false, activation: .silu,
            scaleEmbeddings: false, slidingWindow: nil, localLayers: Array(repeating: false, count: layerCount),
            queryPreAttnScalar: Double(headDim), attnLogitSoftcap: nil, finalLogitSoftcap: nil, qkNorm: false,
            postNorms: false)
        if architecture != .llama {
            // Every Gemma: GeGLU, √dim-scaled tied embeddings, tighter norm epsilon.
            c.normEps = 1e-6
            c.tiedEmbeddings = true
            c.activation = .geluTanh
            c.scaleEmbeddings = true
        }
        switch architecture {
        case .llama, .gemma:
            break
        case .gemma2:
            c.postNorms = true
            c.slidingWindow = 4096
            c.localLayers = (0..<layerCount).map { $0 % 2 == 0 }
            c.attnLogitSoftcap = 50
            c.finalLogitSoftcap = 30
        case .gemma3:
            c.postNorms = true
            c.qkNorm = true
            c.ropeTheta = 1_000_000
            c.ropeLocalTheta = 10_000
            c.slidingWindow = 512
            c.localLayers = Self.gemma3Pattern(layerCount)
        }
        return c
    }

    /// Gemma 3: every 6th layer (5, 11, 17, …) is global, the rest use the sliding window.
    public static func gemma3Pattern(_ layerCount: Int) -> [Bool] { (0..<layerCount).map { ($0 + 1) % 6 != 0 } }

    /// Structural checks shared by every loader; `file` names the source in errors.
    public func validate(file: String) throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw ModelFileError(file, message) } }
        try check(dim > 0 && layerCount > 0 && headCount > 0 && kvHeadCount > 0 && headDim > 0 && ffnDim > 0 && vocabSize > 0,
                  "config has a non-positive size (dim \(dim), layers \(layerCount), heads \(headCount), kv heads \(kvHeadCount), head_dim \(headDim), ffn \(ffnDim), vocab \(vocabSize))")
        try check(headCount % kvHeadCount == 0, "head count \(headCount) is not a multiple of KV head count \(kvHeadCount)")
        try check(headDim % 2 == 0, "head_dim \(headDim) must be even for rotary embeddings")
        try check(localLayers.count == layerCount, "layer pattern has \(localLayers.count) entries for \(layerCount) layers")
        try check(normEps > 0 && ropeTheta > 0, "norm epsilon and rope base must be positive")
    }
}

extension ModelConfig: CustomStringConvertible {
    public var description: String {
        var lines = [
            "architecture        \(architecture.rawValue)",
            "dim                 \(dim)",
            "layers              \(layerCount)",
            "heads               \(headCount)",
            "kv heads            \(kvHeadCount)",
            "head_dim            \(headDim)",
            "ffn dim             \(ffnDim)",
            "vocab               \(vocabSize)",
            "context length      \(contextLength)",
            "norm eps            \(normEps)",
            "rope base           \(ropeTheta)" + (ropeLocalTheta.map { " (local layers \($0))" } ?? ""),
            "tied embeddings     \(tiedEmbeddings)",
            "activation          \(activation.rawValue)",
        ]
        if let s = ropeScaling { lines.append("rope scaling        \(s)") }
        if scaleEmbeddings { lines.append("embedding scale     sqrt(dim)") }
        if let w = slidingWindow {
            let globals = localLayers.enumerated().filter { !$0.element }.map { String($0.offset) }
            lines.append("sliding window      \(w) (global layers: \(globals.joined(separator: ",")))")
        }
        if queryPreAttnScalar != Double(headDim) { lines.append("query scale         1/sqrt(\(queryPreAttnScalar))") }
        if let s = attnLogitSoftcap { lines.append("attn softcap        \(s)") }
        if let s = finalLogitSoftcap { lines.append("final softcap       \(s)") }
        if qkNorm { lines.append("qk norm             true") }
        if postNorms { lines.append("post norms          true") }
        return lines.joined(separator: "\n")
    }
}
