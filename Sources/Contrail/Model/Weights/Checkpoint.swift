#if canImport(Glibc)
import Glibc
#endif

/// The on-disk layouts we load.
public enum CheckpointFormat: String, Sendable {
    case gguf
    /// Hugging Face: config.json + model.safetensors (or shards with model.safetensors.index.json).
    case huggingFace = "huggingface"
    /// jetstream-pytorch: params.json + safetensors with Meta names; int8 weights carry `<name>_scaler`.
    case jetstreamPytorch = "jetstream-pytorch"
}

/// How q/k rows pair up for rotary embeddings. Meta and GGUF Llama weights interleave pairs (0,1),(2,3)…;
/// Hugging Face and every Gemma pair dimension i with i + head_dim/2. The engine rotates in the layout the
/// weights come in, so nothing is permuted at load.
public enum RopeLayout: String, Sendable {
    case interleaved
    case halfSplit = "half-split"

    /// The half-split row holding what interleaved row `row` holds, within heads of `headDim` rows.
    public static func halfSplitRow(ofInterleaved row: Int, headDim: Int) -> Int {
        let head = row / headDim, r = row % headDim
        return head * headDim + (r % 2) * (headDim / 2) + r / 2
    }
}

/// A model's weights and config from any supported layout, with tensors addressed by canonical (GGUF)
/// names: `token_embd.weight`, `blk.N.attn_q.weight`, `output_norm.weight`, …
public struct Checkpoint: Sendable {
    public let path: String
    public let format: CheckpointFormat
    public let config: ModelConfig
    public let ropeLayout: RopeLayout
    /// Gemma stores norm weights as w and applies (1 + w); GGUF converters already added the 1.
    public let normWeightsNeedOffset: Bool
    /// Canonical name → tensor, and the source name each came from (for messages and `inspect`).
    public let tensors: [String: Tensor]
    public let sourceNames: [String: String]
    /// Canonical name of an int8 weight → its per-output-channel scales (jetstream-pytorch).
    public let scales: [String: Tensor]
    /// Present for GGUF files (metadata and the embedded tokenizer).
    public let gguf: GGUFFile?

    public func tensor(_ canonical: String) -> Tensor? { tensors[canonical] }

    /// Opens a .gguf file, a .safetensors file (config beside it), or a checkpoint directory.
    public static func open(_ path: String) throws -> Checkpoint {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ModelFileError(path, "no such file or directory") }
        if (st.st_mode & S_IFMT) == S_IFDIR { return try openDirectory(path) }
        let file = try MappedFile(path: path)
        if file.count >= 4, file.bytes.loadUnaligned(as: UInt32.self) == 0x4655_4747 {
            return try Checkpoint(gguf: GGUFFile(file: file))
        }
        if path.hasSuffix(".safetensors") { return try openDirectory(directory(of: path), only: path) }
        if file.count >= 4 {
            throw ModelFileError(path, "not a GGUF file: bad magic \(GGUFFile.hex(file.bytes.prefix(4)))")
        }
        throw ModelFileError(path, "not a model file: only \(file.count) bytes")
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    public init(gguf: GGUFFile) throws {
        let config = try ModelConfig(gguf: gguf)
        self.init(path: gguf.path, format: .gguf, config: config,
                  ropeLayout: config.architecture == .llama ? .interleaved : .halfSplit,
                  normWeightsNeedOffset: false, tensors: gguf.tensorsByName,
                  sourceNames: Dictionary(uniqueKeysWithValues: gguf.tensors.map { ($0.name, $0.name) }), scales: [:], gguf: gguf)
    }

    init(path: String, format: CheckpointFormat, config: ModelConfig, ropeLayout: RopeLayout, normWeightsNeedOffset: Bool,
         tensors: [String: Tensor], sourceNames: [String: String], scales: [String: Tensor], gguf: GGUFFile?) {
        self.path = path
        self.format = format
        self.config = config
        self.ropeLayout = ropeLayout
        self.normWeightsNeedOffset = normWeightsNeedOffset
        self.tensors = tensors
        self.sourceNames = sourceNames
        self.scales = scales
        self.gguf = gguf
    }

    static func readJSON(_ path: String) throws -> JSON? {
        guard access(path, F_OK) == 0 else { return nil }
        let file = try MappedFile(path: path)
        do { return try JSON.parse(file.bytes) } catch { throw ModelFileError(path, "\(error)") }
    }

    /// The safetensors files of a directory: the index's shards, or model.safetensors, or every *.safetensors.
    static func safetensorsFiles(_ dir: String) throws -> [String] {
        let indexPath = dir + "/model.safetensors.index.json"
        if let index = try readJSON(indexPath) {
            guard let map = index["weight_map"]?.object else { throw ModelFileError(indexPath, "weight_map missing") }
            var shards: [String] = []
            for (_, v) in map {
                guard let s = v.string, !s.contains("/") else { throw ModelFileError(indexPath, "bad shard name in weight_map") }
                if !shards.contains(s) { shards.append(s) }
            }
            return shards.sorted().map { dir + "/" + $0 }
        }
        guard let d = opendir(dir) else { throw ModelFileError(dir, "cannot read directory") }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".safetensors") { names.append(name) }
        }
        guard !names.isEmpty else { throw ModelFileError(dir, "no .gguf, .safetensors or model.safetensors.index.json found") }
        return names.sorted().map { dir + "/" + $0 }
    }

    static func openDirectory(_ dir: String, only: String? = nil) throws -> Checkpoint {
        let files = try only.map { [$0] } ?? safetensorsFiles(dir)
        var all: [String: Tensor] = [:]
        for f in files {
            for t in try SafetensorsFile(path: f).tensors {
                guard all[t.name] == nil else { throw ModelFileError(f, "tensor \(t.name) appears in more than one shard") }
                all[t.name] = t
            }
        }
        if let hf = try readJSON(dir + "/config.json") {
            let config = try ModelConfig(huggingFace: hf, file: dir + "/config.json")
            var tensors: [String: Tensor] = [:], names: [String: String] = [:]
            for (name, t) in all {
                guard let c = huggingFaceCanonicalName(name, config.architecture) else { continue }
                tensors[c] = t
                names[c] = name
            }
            return Checkpoint(path: dir, format: .huggingFace, config: config, ropeLayout: .halfSplit,
                              normWeightsNeedOffset: config.architecture != .llama, tensors: tensors, sourceNames: names,
                              scales: [:], gguf: nil)
        }
        if let meta = try readJSON(dir + "/params.json") {
            var config = try ModelConfig(meta: meta, file: dir + "/params.json", embeddingRows: all["tok_embeddings.weight"]?.rows)
            // params.json has no tie flag: a checkpoint without output.weight shares the embedding.
            config.tiedEmbeddings = all["output.weight"] == nil
            var tensors: [String: Tensor] = [:], names: [String: String] = [:], scales: [String: Tensor] = [:]
            for (name, t) in all {
                if name.hasSuffix(".weight_scaler") {
                    let weight = String(name.dropLast("_scaler".count))
                    if let c = metaCanonicalName(weight) { scales[c] = t }
                    continue
                }
                guard let c = metaCanonicalName(name) else { continue }
                tensors[c] = t
                names[c] = name
            }
            return Checkpoint(path: dir, format: .jetstreamPytorch, config: config, ropeLayout: .interleaved,
                              normWeightsNeedOffset: false, tensors: tensors, sourceNames: names, scales: scales, gguf: nil)
        }
        throw ModelFileError(dir, "no config.json (Hugging Face) or params.json (jetstream-pytorch) beside the safetensors")
    }

    /// Hugging Face names → canonical. Gemma 2/3's `post_attention_layernorm` is a post-norm, Llama's is the FFN pre-norm.
    static func huggingFaceCanonicalName(_ name: String, _ arch: Architecture) -> String? {
        var n = Substring(name)
        for prefix in ["language_model.", "model.language_model."] where n.hasPrefix(prefix) { n = n.dropFirst(prefix.count) }
        switch n {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default: break
        }
        guard n.hasPrefix("model.layers.") else { return nil }
        let rest = n.dropFirst("model.layers.".count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
        let suffix = rest[rest.index(after: dot)...]
        let gemmaPost = arch == .gemma2 || arch == .gemma3
        let map: [Substring: String] = [
            "input_layernorm.weight": "attn_norm.weight",
            "self_attn.q_proj.weight": "attn_q.weight",
            "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight",
            "self_attn.o_proj.weight": "attn_output.weight",
            "self_attn.q_norm.weight": "attn_q_norm.weight",
            "self_attn.k_norm.weight": "attn_k_norm.weight",
            "post_attention_layernorm.weight": gemmaPost ? "post_attention_norm.weight" : "ffn_norm.weight",
            "pre_feedforward_layernorm.weight": "ffn_norm.weight",
            "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight",
            "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight",
        ]
        return map[suffix].map { "blk.\(layer).\($0)" }
    }

    /// Meta / jetstream-pytorch names → canonical.
    static func metaCanonicalName(_ name: String) -> String? {
        switch name {
        case "tok_embeddings.weight": return "token_embd.weight"
        case "norm.weight": return "output_norm.weight"
        case "output.weight": return "output.weight"
        default: break
        }
        guard name.hasPrefix("layers.") else { return nil }
        let rest = name.dropFirst("layers.".count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
        let map: [Substring: String] = [
            "attention_norm.weight": "attn_norm.weight",
            "attention.wq.weight": "attn_q.weight",
            "attention.wk.weight": "attn_k.weight",
            "attention.wv.weight": "attn_v.weight",
            "attention.wo.weight": "attn_output.weight",
            "ffn_norm.weight": "ffn_norm.weight",
            "feed_forward.w1.weight": "ffn_gate.weight",
            "feed_forward.w3.weight": "ffn_up.weight",
            "feed_forward.w2.weight": "ffn_down.weight",
        ]
        return map[rest[rest.index(after: dot)...]].map { "blk.\(layer).\($0)" }
    }
}
