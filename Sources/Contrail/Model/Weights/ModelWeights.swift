/// A weight matrix [out, in] and, for int8 checkpoints, its per-output-channel scales.
public struct WeightMatrix: Sendable {
    public let tensor: Tensor
    public let scales: Tensor?
    public var rows: Int { tensor.rows }
    public var columns: Int { tensor.columns }
}

/// One transformer block's weights, by role (llama2.c's `Weights`, per layer).
public struct LayerWeights: Sendable {
    public let attnNorm: Tensor
    public let wq: WeightMatrix, wk: WeightMatrix, wv: WeightMatrix, wo: WeightMatrix
    public let ffnNorm: Tensor
    public let gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix
    /// Gemma 3 only.
    public let qNorm: Tensor?, kNorm: Tensor?
    /// Gemma 2/3 only.
    public let postAttnNorm: Tensor?, postFfnNorm: Tensor?
}

/// Every tensor a model needs, bound by role and checked against the config's shapes, so a missing or
/// misshapen tensor is reported at load (naming the file and tensor), never discovered mid-generation.
public struct ModelWeights: Sendable {
    public let config: ModelConfig
    public let tokenEmbedding: WeightMatrix
    /// The LM head; the token embedding itself when embeddings are tied.
    public let output: WeightMatrix
    public let outputNorm: Tensor
    public let layers: [LayerWeights]
    /// Llama 3.1 GGUF files carry rope frequency factors as a tensor.
    public let ropeFrequencyFactors: Tensor?
    public let ropeLayout: RopeLayout
    public let normWeightsNeedOffset: Bool

    /// The matrices a forward step multiplies by: the LM head, then each layer's seven (the token embedding
    /// is looked up a row at a time, not multiplied; tied, it is the head).
    public var productMatrices: [WeightMatrix] {
        [output] + layers.flatMap { [$0.wq, $0.wk, $0.wv, $0.wo, $0.gate, $0.up, $0.down] }
    }

    public init(_ ckpt: Checkpoint) throws {
        let c = ckpt.config
        config = c
        ropeLayout = ckpt.ropeLayout
        normWeightsNeedOffset = ckpt.normWeightsNeedOffset
        func tensor(_ name: String, _ shape: [Int]) throws -> Tensor {
            guard let t = ckpt.tensor(name) else { throw ModelFileError(ckpt.path, "missing tensor \(name)") }
            guard t.shape == shape else {
                throw ModelFileError(ckpt.path, "tensor \(ckpt.sourceNames[name] ?? name) has shape \(t.shape), expected \(shape)")
            }
            return t
        }
        func matrix(_ name: String, _ rows: Int, _ columns: Int) throws -> WeightMatrix {
            let t = try tensor(name, [rows, columns])
            let s = ckpt.scales[name]
            if t.type == .i8 && s == nil { throw ModelFileError(ckpt.path, "int8 tensor \(name) has no weight_scaler") }
            if let s, s.elementCount != rows { throw ModelFileError(ckpt.path, "scaler of \(name) has \(s.elementCount) values, expected \(rows)") }
            return WeightMatrix(tensor: t, scales: s)
        }
        func norm(_ name: String, _ size: Int) throws -> Tensor { try tensor(name, [size]) }
        tokenEmbedding = try matrix("token_embd.weight", c.vocabSize, c.dim)
        output = ckpt.tensor("output.weight") == nil && c.tiedEmbeddings ? tokenEmbedding : try matrix("output.weight", c.vocabSize, c.dim)
        outputNorm = try norm("output_norm.weight", c.dim)
        ropeFrequencyFactors = ckpt.tensor("rope_freqs.weight")
        layers = try (0..<c.layerCount).map { i in
            let p = "blk.\(i)."
            return LayerWeights(
                attnNorm: try norm(p + "attn_norm.weight", c.dim),
                wq: try matrix(p + "attn_q.weight", c.qDim, c.dim),
                wk: try matrix(p + "attn_k.weight", c.kvDim, c.dim),
                wv: try matrix(p + "attn_v.weight", c.kvDim, c.dim),
                wo: try matrix(p + "attn_output.weight", c.dim, c.qDim),
                ffnNorm: try norm(p + "ffn_norm.weight", c.dim),
                gate: try matrix(p + "ffn_gate.weight", c.ffnDim, c.dim),
                up: try matrix(p + "ffn_up.weight", c.ffnDim, c.dim),
                down: try matrix(p + "ffn_down.weight", c.dim, c.ffnDim),
                qNorm: c.qkNorm ? try norm(p + "attn_q_norm.weight", c.headDim) : nil,
                kNorm: c.qkNorm ? try norm(p + "attn_k_norm.weight", c.headDim) : nil,
                postAttnNorm: c.postNorms ? try norm(p + "post_attention_norm.weight", c.dim) : nil,
                postFfnNorm: c.postNorms ? try norm(p + "post_ffw_norm.weight", c.dim) : nil)
        }
    }
}
