/// Reading `ModelConfig` from the three places configs live: GGUF metadata, Hugging Face config.json,
/// and Meta / jetstream-pytorch params.json. Missing required fields are errors naming the file and key.
extension ModelConfig {
    public init(gguf: GGUFFile) throws {
        let path = gguf.path
        guard let archName = gguf["general.architecture"]?.string else {
            throw ModelFileError(path, "general.architecture missing")
        }
        guard let arch = Architecture(rawValue: archName) else {
            throw ModelFileError(path, "unsupported architecture \(archName) (supported: \(Architecture.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        func int(_ key: String) throws -> Int {
            guard let v = gguf["\(archName).\(key)"]?.int else { throw ModelFileError(path, "\(archName).\(key) missing") }
            return v
        }
        func optInt(_ key: String) -> Int? { gguf["\(archName).\(key)"]?.int }
        func optDouble(_ key: String) -> Double? { gguf["\(archName).\(key)"]?.double }
        let dim = try int("embedding_length")
        let layers = try int("block_count")
        let heads = try int("attention.head_count")
        let kvHeads = optInt("attention.head_count_kv") ?? heads
        let headDim = optInt("attention.key_length") ?? (heads > 0 ? dim / heads : 0)
        let vocab = optInt("vocab_size") ?? gguf["tokenizer.ggml.tokens"]?.array?.count
            ?? gguf.tensorsByName["token_embd.weight"]?.rows ?? 0
        var c = ModelConfig.defaults(arch, dim: dim, layerCount: layers, headCount: heads, kvHeadCount: kvHeads,
                                     headDim: headDim, ffnDim: try int("feed_forward_length"), vocabSize: vocab)
        if let eps = optDouble("attention.layer_norm_rms_epsilon") { c.normEps = eps }
        if let ctx = optInt("context_length") { c.contextLength = ctx }
        if let theta = optDouble("rope.freq_base") { c.ropeTheta = theta }
        if let w = optInt("attention.sliding_window") { c.slidingWindow = w }
        if let s = optDouble("attn_logit_softcapping") { c.attnLogitSoftcap = s }
        if let s = optDouble("final_logit_softcapping") { c.finalLogitSoftcap = s }
        if gguf["\(archName).rope.scaling.type"]?.string == "linear", let f = optDouble("rope.scaling.factor"), f != 1 {
            c.ropeScaling = .linear(factor: f)
        }
        c.tiedEmbeddings = gguf.tensorsByName["output.weight"] == nil
        // GGUF does not store Gemma 2/3's query scale; the 27B models use dim/heads, the others head_dim.
        if (arch == .gemma2 && layers == 46) || (arch == .gemma3 && layers == 62) {
            c.queryPreAttnScalar = Double(dim / heads)
        }
        try c.validate(file: path)
        self = c
    }

    /// A Hugging Face config.json (`model_type` llama, gemma, gemma2, gemma3_text, or gemma3 with a text_config).
    public init(huggingFace json: JSON, file: String) throws {
        var j = json
        if j["model_type"]?.string == "gemma3", let text = j["text_config"] { j = text }
        let type = j["model_type"]?.string ?? json["model_type"]?.string ?? ""
        let arch: Architecture
        switch type {
        case "llama", "mistral": arch = .llama
        case "gemma": arch = .gemma
        case "gemma2": arch = .gemma2
        case "gemma3", "gemma3_text": arch = .gemma3
        default: throw ModelFileError(file, "unsupported model_type \(type.isEmpty ? "(missing)" : type) (supported: llama, gemma, gemma2, gemma3)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = j[key]?.int else { throw ModelFileError(file, "\(key) missing or not an integer") }
            return v
        }
        let dim = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let layers = try int("num_hidden_layers")
        var c = ModelConfig.defaults(arch, dim: dim, layerCount: layers, headCount: heads,
                                     kvHeadCount: j["num_key_value_heads"]?.int ?? heads,
                                     headDim: j["head_dim"]?.int ?? (heads > 0 ? dim / heads : 0),
                                     ffnDim: try int("intermediate_size"), vocabSize: try int("vocab_size"))
        if let eps = j["rms_norm_eps"]?.double { c.normEps = eps }
        if let ctx = j["max_position_embeddings"]?.int { c.contextLength = ctx }
        if let theta = j["rope_theta"]?.double { c.ropeTheta = theta }
        if let local = j["rope_local_base_freq"]?.double { c.ropeLocalTheta = local }
        if let tied = j["tie_word_embeddings"]?.bool { c.tiedEmbeddings = tied }
        if let s = j["query_pre_attn_scalar"]?.double { c.queryPreAttnScalar = s }
        if let s = j["attn_logit_softcapping"] { c.attnLogitSoftcap = s.double }
        if let s = j["final_logit_softcapping"] { c.finalLogitSoftcap = s.double }
        if arch != .llama, let w = j["sliding_window"]?.int { c.slidingWindow = w }
        if let types = j["layer_types"]?.array, types.count == layers {
            c.localLayers = types.map { $0.string == "sliding_attention" }
        } else if arch == .gemma3, let pattern = j["sliding_window_pattern"]?.int, pattern > 0 {
            c.localLayers = (0..<layers).map { ($0 + 1) % pattern != 0 }
        }
        if let s = j["rope_scaling"], !s.isNull {
            let kind = s["rope_type"]?.string ?? s["type"]?.string ?? ""
            switch kind {
            case "llama3":
                c.ropeScaling = .llama3(factor: s["factor"]?.double ?? 8, lowFreqFactor: s["low_freq_factor"]?.double ?? 1,
                                        highFreqFactor: s["high_freq_factor"]?.double ?? 4,
                                        originalContextLength: s["original_max_position_embeddings"]?.int ?? 8192)
            case "linear":
                c.ropeScaling = .linear(factor: s["factor"]?.double ?? 1)
            case "default", "":
                break
            default:
                throw ModelFileError(file, "unsupported rope_scaling type \(kind) (supported: llama3, linear)")
            }
        }
        try c.validate(file: file)
        self = c
    }

    /// Meta / jetstream-pytorch params.json (Llama). `vocabSize` comes from the embedding when the file says -1.
    public init(meta json: JSON, file: String, embeddingRows: Int?) throws {
        func int(_ key: String) throws -> Int {
            guard let v = json[key]?.int else { throw ModelFileError(file, "\(key) missing or not an integer") }
            return v
        }
        let dim = try int("dim")
        let heads = try int("n_heads")
        var vocab = json["vocab_size"]?.int ?? -1
        if vocab <= 0 { vocab = embeddingRows ?? 0 }
        // Llama's FFN width rule: 2/3 of 4·dim, times the optional multiplier, rounded up to multiple_of.
        let multipleOf = json["multiple_of"]?.int ?? 256
        var hidden = 4 * dim
        hidden = 2 * hidden / 3
        if let m = json["ffn_dim_multiplier"]?.double { hidden = Int(m * Double(hidden)) }
        hidden = multipleOf * ((hidden + multipleOf - 1) / multipleOf)
        var c = ModelConfig.defaults(.llama, dim: dim, layerCount: try int("n_layers"), headCount: heads,
                                     kvHeadCount: json["n_kv_heads"]?.int ?? heads, headDim: heads > 0 ? dim / heads : 0,
                                     ffnDim: json["hidden_dim"]?.int ?? hidden, vocabSize: vocab)
        if let eps = json["norm_eps"]?.double { c.normEps = eps }
        if let theta = json["rope_theta"]?.double { c.ropeTheta = theta }
        if let ctx = json["max_seq_len"]?.int { c.contextLength = ctx }
        if json["use_scaled_rope"]?.bool == true {
            c.ropeScaling = .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContextLength: 8192)
        }
        try c.validate(file: file)
        self = c
    }
}
