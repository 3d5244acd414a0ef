import ArgumentParser
import Contrail

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a model's architecture, config, tokenizer and tensor table.",
        discussion: "PATH is a .gguf file, a .safetensors file, or a checkpoint directory (Hugging Face config.json or jetstream-pytorch params.json).")

    @Argument(help: "Model file or checkpoint directory.")
    var path: String

    @Flag(name: .long, help: "Also print every metadata key (GGUF).")
    var metadata = false

    @Flag(name: .long, inversion: .prefixedNo, help: "Print the tensor table.")
    var tensors = true

    func run() throws {
        try reportingErrors {
            let ckpt = try Checkpoint.open(path)
            var out = "file                \(ckpt.path)\n"
            out += "format              \(ckpt.format.rawValue)"
            if let g = ckpt.gguf { out += " v\(g.version), \(formatBytes(g.file.count))" }
            out += ", \(ckpt.tensors.count) tensors\n"
            if let name = ckpt.gguf?["general.name"]?.string { out += "name                \(name)\n" }
            out += ckpt.config.description + "\n"
            out += "rope layout         \(ckpt.ropeLayout.rawValue)\n"
            let weights = try ModelWeights(ckpt)
            let params = ckpt.tensors.values.reduce(0) { $0 + $1.elementCount }
            let bytes = ckpt.tensors.values.reduce(0) { $0 + $1.byteCount }
            out += "parameters          \(params) (\(formatBytes(bytes)) of weights, all \(weights.layers.count) layers bound)\n"
            if let g = ckpt.gguf, g["tokenizer.ggml.model"] != nil {
                let tok = try Tokenizer(gguf: g)
                out += "tokenizer           \(g["tokenizer.ggml.model"]?.string ?? "")"
                if let pre = g["tokenizer.ggml.pre"]?.string { out += " (pre: \(pre))" }
                out += ", \(tok.vocabSize) tokens, chat \(tok.family.rawValue)\n"
                out += "special tokens      bos \(describe(tok, tok.bosId)), eos \(describe(tok, tok.eosId)), adds BOS: \(tok.addsBOS), stop \(tok.stopIds.sorted().map { describe(tok, $0) }.joined(separator: " "))\n"
            }
            if metadata, let g = ckpt.gguf {
                out += "\nmetadata (\(g.metadataKeys.count) keys)\n"
                for key in g.metadataKeys { out += "  \(pad(key, 44)) \(summary(g.metadata[key]!))\n" }
            }
            if tensors {
                out += "\ntensors\n"
                let rows = ckpt.tensors.sorted { Self.order($0.key) < Self.order($1.key) }
                let width = max(10, rows.map { $0.key.count }.max() ?? 0) + 2
                for (name, t) in rows {
                    var line = "  " + pad(name, width) + pad(t.type.rawValue, 6) + pad("\(t.shape)", 16) + formatBytes(t.byteCount)
                    if let source = ckpt.sourceNames[name], source != name { line += "  ← \(source)" }
                    out += line + "\n"
                }
            }
            print(out, terminator: "")
        }
    }

    func describe(_ tok: Tokenizer, _ id: Int32?) -> String {
        guard let id else { return "none" }
        return "\(id) \(tok.piece(id) ?? "?")"
    }

    /// Sort key: global tensors first, then by layer number, then name.
    static func order(_ name: String) -> (Int, String) {
        guard name.hasPrefix("blk.") else { return (-1, name) }
        let rest = name.dropFirst(4)
        return (Int(rest.prefix { $0.isNumber }) ?? 0, name)
    }

    func summary(_ v: GGUFValue) -> String {
        switch v {
        case .array(let a):
            let head = a.prefix(4).map { summary($0) }.joined(separator: ", ")
            return "[\(head)\(a.count > 4 ? ", … \(a.count) items" : "")]"
        case .string(let s):
            let flat = s.replacingOccurrences("\n", "\\n")
            return flat.count > 80 ? "\"\(flat.prefix(80))…\"" : "\"\(flat)\""
        case .uint(let u): return "\(u)"
        case .int(let i): return "\(i)"
        case .float(let f): return "\(f)"
        case .bool(let b): return "\(b)"
        }
    }
}

extension String {
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
