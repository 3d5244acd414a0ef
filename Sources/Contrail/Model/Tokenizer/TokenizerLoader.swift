extension Tokenizer {
    /// Loads a tokenizer from a file, recognising its format by content: a GGUF model (its embedded
    /// vocabulary), a Hugging Face tokenizer.json, a tiktoken rank file, or a SentencePiece model.
    public static func load(path: String) throws -> Tokenizer {
        let file = try MappedFile(path: path)
        let bytes = file.bytes
        if bytes.count >= 4, bytes.loadUnaligned(as: UInt32.self) == 0x4655_4747 {
            return try Tokenizer(gguf: GGUFFile(file: file))
        }
        var firstNonSpace: UInt8 = 0
        for b in bytes.prefix(4096) where b != 0x20 && b != 0x0A && b != 0x0D && b != 0x09 {
            firstNonSpace = b
            break
        }
        if firstNonSpace == UInt8(ascii: "{") {
            let json: JSON
            do { json = try JSON.parse(bytes) } catch { throw ModelFileError(path, "not a tokenizer.json: \(error)") }
            return try Tokenizer(tokenizerJSON: json, source: path)
        }
        if looksLikeTiktoken(bytes) { return try Tokenizer(tiktoken: bytes, source: path) }
        return try Tokenizer(sentencePiece: Array(bytes), source: path)
    }

    static func looksLikeTiktoken(_ bytes: UnsafeRawBufferPointer) -> Bool {
        // "base64 rank\n" lines: only base64 characters, one space, digits.
        guard let nl = bytes.prefix(512).firstIndex(of: 0x0A) else { return false }
        let line = bytes[..<nl]
        guard let space = line.firstIndex(of: 0x20), space > 0 else { return false }
        let isBase64 = { (b: UInt8) in (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || (0x30...0x39).contains(b) || b == 0x2B || b == 0x2F || b == 0x3D }
        return line[..<space].allSatisfy(isBase64) && line[(space + 1)...].allSatisfy { (0x30...0x39).contains($0) }
            && space + 1 < nl
    }

    // MARK: SentencePiece

    /// A SentencePiece model (tokenizer.model, maxtext's tokenizer.llama2 / .gemma / .gemma3).
    public convenience init(sentencePiece serialized: [UInt8], source: String) throws {
        let proto = try serialized.withUnsafeBytes { try SentencePieceProto(parsing: $0, source: source) }
        let model = try SentencePieceModel(serialized: serialized, source: source)
        try self.init(sentencePiece: proto, model: model, source: source, addsBOS: true)
    }

    convenience init(sentencePiece proto: SentencePieceProto, model: SentencePieceModel, source: String, addsBOS: Bool,
                     jinjaTemplate: String? = nil) throws {
        guard model.vocabSize == proto.pieces.count else {
            throw ModelFileError(source, "SentencePiece vocabulary size \(model.vocabSize) differs from the model's \(proto.pieces.count) pieces")
        }
        let vocab = Vocabulary(pieces: proto.pieces.map(\.piece), kinds: proto.pieces.map(\.kind), decoded: proto.decodedBytes)
        // libsentencepiece never matches control pieces in text, so we do (<bos>, <eos>, <s>, </s>);
        // user-defined pieces (<start_of_turn>) it matches itself.
        var specials: [(String, Int32)] = []
        for (i, p) in proto.pieces.enumerated() where p.kind == .control || p.kind == .unknown {
            specials.append((p.piece, Int32(i)))
        }
        let bos = model.bosId, eos = model.eosId
        self.init(vocabulary: vocab, model: model, specialTokens: specials, bosId: bos >= 0 ? bos : nil,
                  eosId: eos >= 0 ? eos : nil, addsBOS: addsBOS, stripsLeadingSpace: proto.addDummyPrefix, source: source,
                  jinjaTemplate: jinjaTemplate)
    }

    // MARK: GGUF

    /// The vocabulary embedded in a GGUF model (`tokenizer.ggml.*`): `llama` (SentencePiece, run through
    /// libsentencepiece from a synthesized model proto) or `gpt2` (byte-level BPE).
    public convenience init(gguf: GGUFFile) throws {
        let path = gguf.path
        guard let kind = gguf["tokenizer.ggml.model"]?.string else {
            throw ModelFileError(path, "no tokenizer in this GGUF (tokenizer.ggml.model missing); pass --tokenizer")
        }
        guard let tokenValues = gguf["tokenizer.ggml.tokens"]?.array else {
            throw ModelFileError(path, "tokenizer.ggml.tokens missing")
        }
        let tokens = tokenValues.map { $0.string ?? "" }
        let types = gguf["tokenizer.ggml.token_type"]?.array?.map { TokenKind(rawValue: UInt8(clamping: $0.int ?? 1)) ?? .normal }
            ?? Array(repeating: .normal, count: tokens.count)
        guard types.count == tokens.count else {
            throw ModelFileError(path, "tokenizer.ggml.token_type has \(types.count) entries for \(tokens.count) tokens")
        }
        func tokenId(_ key: String) throws -> Int32? {
            guard let v = gguf[key]?.int else { return nil }
            guard v >= 0 && v < tokens.count else { throw ModelFileError(path, "\(key) = \(v) is outside the vocabulary") }
            return Int32(v)
        }
        let bos = try tokenId("tokenizer.ggml.bos_token_id")
        let eos = try tokenId("tokenizer.ggml.eos_token_id")
        switch kind {
        case "llama":
            let scores = gguf["tokenizer.ggml.scores"]?.array?.map { Float($0.double ?? 0) } ?? Array(repeating: 0, count: tokens.count)
            guard scores.count == tokens.count else {
                throw ModelFileError(path, "tokenizer.ggml.scores has \(scores.count) entries for \(tokens.count) tokens")
            }
            let unk = try tokenId("tokenizer.ggml.unknown_token_id") ?? types.firstIndex(of: .unknown).map(Int32.init)
            var pieces = (0..<tokens.count).map { (piece: tokens[$0], score: scores[$0], kind: types[$0]) }
            // Some converters mark <unk> as control; libsentencepiece needs exactly one unknown piece.
            if let unk { pieces[Int(unk)].kind = .unknown }
            // llama.cpp's converter writes user-defined pieces with plain spaces; SentencePiece matches them
            // in whitespace-escaped text, so they go back to ▁.
            for i in pieces.indices where pieces[i].kind == .userDefined && pieces[i].piece.contains(" ") {
                pieces[i].piece = pieces[i].piece.replacingSpaces()
            }
            let proto = SentencePieceProto(pieces: pieces, addDummyPrefix: gguf["tokenizer.ggml.add_space_prefix"]?.bool ?? true,
                                           byteFallback: types.contains(.byte))
            let pad = try tokenId("tokenizer.ggml.padding_token_id")
            func name(_ id: Int32?) -> String? { id.map { tokens[Int($0)] } }
            let serialized = proto.serialized(unkPiece: name(unk), bosPiece: name(bos), eosPiece: name(eos),
                                              padPiece: pad == bos || pad == eos || pad == unk ? nil : name(pad))
            let model = try SentencePieceModel(serialized: serialized, source: path)
            try self.init(sentencePiece: proto, model: model, source: path,
                          addsBOS: gguf["tokenizer.ggml.add_bos_token"]?.bool ?? true,
                          jinjaTemplate: gguf["tokenizer.chat_template"]?.string)
        case "gpt2":
            let pre = gguf["tokenizer.ggml.pre"]?.string ?? "default"
            let preTokenizer: PreTokenizer
            switch pre {
            case "llama3", "llama-bpe", "llama-v3": preTokenizer = .llama3
            case "smollm": preTokenizer = .smollm
            case "gpt2", "default": preTokenizer = .gpt2
            default: throw ModelFileError(path, "unsupported pre-tokenizer \(pre) (supported: llama-bpe, smollm, gpt2)")
            }
            let merges = gguf["tokenizer.ggml.merges"]?.array?.map { $0.string ?? "" } ?? []
            try self.init(byteLevelTokens: tokens, kinds: types, merges: merges, preTokenizer: preTokenizer,
                          wholePieceFirst: preTokenizer == .llama3, bosId: bos, eosId: eos,
                          unknownId: try tokenId("tokenizer.ggml.unknown_token_id"),
                          addsBOS: gguf["tokenizer.ggml.add_bos_token"]?.bool ?? (preTokenizer == .llama3), source: path,
                          jinjaTemplate: gguf["tokenizer.chat_template"]?.string)
        default:
            throw ModelFileError(path, "unsupported tokenizer model \(kind) (supported: llama, gpt2)")
        }
    }

    // MARK: Byte-level BPE

    /// Byte-level BPE from tokens spelled in GPT-2's byte alphabet (tokenizer.json, GGUF) and "a b" merges.
    convenience init(byteLevelTokens tokens: [String], kinds: [TokenKind], merges: [String], preTokenizer: PreTokenizer,
                     wholePieceFirst: Bool, bosId: Int32?, eosId: Int32?, unknownId: Int32?, addsBOS: Bool, source: String,
                     jinjaTemplate: String? = nil) throws {
        var idsByString: [String: Int32] = [:]
        idsByString.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where idsByString[t] == nil { idsByString[t] = Int32(i) }
        var tokenBytes: [[UInt8]] = []
        tokenBytes.reserveCapacity(tokens.count)
        var idsByBytes: [[UInt8]: Int32] = [:]
        for (i, t) in tokens.enumerated() {
            // Special and added tokens are literal text; normal ones are spelled in the byte alphabet.
            let b = kinds[i] == .normal ? ByteLevel.bytes(t) ?? Array(t.utf8) : Array(t.utf8)
            tokenBytes.append(b)
            if kinds[i] == .normal && idsByBytes[b] == nil { idsByBytes[b] = Int32(i) }
        }
        // Some vocabularies (SmolLM2) lack a few control bytes; those encode as the unknown token, as in
        // Hugging Face's BPE.
        let unknown = unknownId ?? kinds.firstIndex(of: .unknown).map(Int32.init) ?? 0
        let byteIds = (0..<256).map { idsByBytes[[UInt8($0)]] ?? unknown }
        var table: [UInt64: UInt64] = [:]
        table.reserveCapacity(merges.count)
        for (rank, m) in merges.enumerated() {
            let parts = m.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let a = idsByString[String(parts[0])], let b = idsByString[String(parts[1])],
                  let merged = idsByString[String(parts[0]) + String(parts[1])] else {
                throw ModelFileError(source, "merge \(rank) \"\(m)\" refers to tokens not in the vocabulary")
            }
            let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
            if table[key] == nil { table[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged)) }
        }
        let model = BytePairModel(preTokenizer: preTokenizer, ranking: .merges(table), byteIds: byteIds, idsByBytes: idsByBytes,
                                  tokenBytes: tokenBytes, wholePieceFirst: wholePieceFirst)
        let vocab = Vocabulary(pieces: tokens, kinds: kinds, decoded: { tokenBytes[$0] })
        let specials = (0..<tokens.count).filter { kinds[$0] == .control || kinds[$0] == .userDefined }.map { (tokens[$0], Int32($0)) }
        self.init(vocabulary: vocab, model: model, specialTokens: specials, bosId: bosId, eosId: eosId, addsBOS: addsBOS,
                  stripsLeadingSpace: false, source: source, jinjaTemplate: jinjaTemplate)
    }

    /// A Hugging Face tokenizer.json with a byte-level BPE model (Llama 3, SmolLM2, GPT-2 family).
    public convenience init(tokenizerJSON json: JSON, source: String) throws {
        guard let model = json["model"], model["type"]?.string == "BPE", let vocabObject = model["vocab"]?.object else {
            throw ModelFileError(source, "unsupported tokenizer.json: only byte-level BPE models are supported")
        }
        let preTokenizer = try Self.preTokenizer(json["pre_tokenizer"], source: source)
        var added: [(Int, String, Bool)] = []
        for a in json["added_tokens"]?.array ?? [] {
            guard let id = a["id"]?.int, let content = a["content"]?.string else { continue }
            added.append((id, content, a["special"]?.bool ?? false))
        }
        let size = max(vocabObject.map { $0.1.int ?? -1 }.max() ?? -1, added.map(\.0).max() ?? -1) + 1
        guard size > 0 else { throw ModelFileError(source, "tokenizer.json has an empty vocabulary") }
        var tokens = [String](repeating: "", count: size)
        var kinds = [TokenKind](repeating: .unused, count: size)
        for (piece, idValue) in vocabObject {
            guard let id = idValue.int, id >= 0 else { throw ModelFileError(source, "vocab entry \(piece) has a bad id") }
            tokens[id] = piece
            kinds[id] = .normal
        }
        for (id, content, special) in added {
            tokens[id] = content
            kinds[id] = special ? .control : .userDefined
        }
        var merges: [String] = []
        for m in model["merges"]?.array ?? [] {
            if let s = m.string { merges.append(s) } else if let pair = m.array, pair.count == 2, let a = pair[0].string, let b = pair[1].string {
                merges.append(a + " " + b)
            }
        }
        func id(_ p: String) -> Int32? { tokens.firstIndex(of: p).map(Int32.init) }
        // BOS: the special token the post-processor's template starts with, else the family's own.
        var bos: Int32? = nil
        var templateAddsBOS: Bool? = nil
        if let post = json["post_processor"] {
            let processors = post["type"]?.string == "Sequence" ? post["processors"]?.array ?? [] : [post]
            for p in processors where p["type"]?.string == "TemplateProcessing" {
                if let first = p["single"]?.array?.first, let sid = first["SpecialToken"]?["id"]?.string {
                    bos = id(sid)
                    templateAddsBOS = bos != nil
                } else {
                    templateAddsBOS = false
                }
            }
        }
        bos = bos ?? id("<|begin_of_text|>") ?? id("<s>") ?? id("<|endoftext|>")
        let eos = id("<|end_of_text|>") ?? id("</s>") ?? id("<|endoftext|>") ?? id("<|im_end|>")
        // Llama 3 expects <|begin_of_text|> even when a tokenizer.json's post-processor omits it.
        let addsBOS = templateAddsBOS ?? (preTokenizer == .llama3 && id("<|begin_of_text|>") != nil)
        try self.init(byteLevelTokens: tokens, kinds: kinds, merges: merges, preTokenizer: preTokenizer,
                      wholePieceFirst: model["ignore_merges"]?.bool ?? false, bosId: bos, eosId: eos,
                      unknownId: model["unk_token"]?.string.flatMap(id), addsBOS: addsBOS,
                      source: source)
    }

    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Recognises the pre-tokenizer configurations we implement; anything else is refused by name.
    static func preTokenizer(_ p: JSON?, source: String) throws -> PreTokenizer {
        guard let p else { throw ModelFileError(source, "tokenizer.json has no pre_tokenizer") }
        let steps = p["type"]?.string == "Sequence" ? p["pretokenizers"]?.array ?? [] : [p]
        let types = steps.compactMap { $0["type"]?.string }
        if types == ["Split", "ByteLevel"], steps[0]["pattern"]?["Regex"]?.string == llama3Pattern { return .llama3 }
        if types == ["Digits", "ByteLevel"], steps[0]["individual_digits"]?.bool == true { return .smollm }
        if types == ["ByteLevel"], steps[0]["use_regex"]?.bool != false { return .gpt2 }
        throw ModelFileError(source, "unsupported pre_tokenizer \(types) (supported: Llama 3 split, SmolLM digits + byte-level, GPT-2 byte-level)")
    }

    // MARK: tiktoken

    /// Llama 3's tiktoken file (`base64 rank` per line); the 256 special tokens follow the 128 000 ranks.
    public convenience init(tiktoken bytes: UnsafeRawBufferPointer, source: String) throws {
        var tokenBytes: [[UInt8]] = []
        var idsByBytes: [[UInt8]: Int32] = [:]
        var lineNumber = 0
        for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: true) {
            lineNumber += 1
            guard let space = line.firstIndex(of: 0x20), let decoded = Base64.decode(line[..<space]),
                  let rank = Int(String(decoding: line[(space + 1)...], as: UTF8.self)) else {
                throw ModelFileError(source, "line \(lineNumber) is not `base64 rank`")
            }
            guard rank == tokenBytes.count else {
                throw ModelFileError(source, "line \(lineNumber): rank \(rank) out of order (expected \(tokenBytes.count))")
            }
            idsByBytes[decoded] = Int32(rank)
            tokenBytes.append(decoded)
        }
        guard !tokenBytes.isEmpty else { throw ModelFileError(source, "empty tiktoken file") }
        var byteIds = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            guard let id = idsByBytes[[UInt8(b)]] else { throw ModelFileError(source, "no token for byte 0x\(String(b, radix: 16))") }
            byteIds[b] = id
        }
        let base = tokenBytes.count
        // Meta's Llama 3 special tokens, in order after the ranks.
        var specialNames = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                            "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>",
                            "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
        specialNames += (5..<251).map { "<|reserved_special_token_\($0)|>" }
        var pieces = tokenBytes.map { b in String(b.map { Character(ByteLevel.byteToScalar[Int($0)]) }) }
        pieces += specialNames
        let kinds = [TokenKind](repeating: .normal, count: base) + [TokenKind](repeating: .control, count: specialNames.count)
        let allBytes = tokenBytes + specialNames.map { Array($0.utf8) }
        let model = BytePairModel(preTokenizer: .llama3, ranking: .tokenRanks, byteIds: byteIds, idsByBytes: idsByBytes,
                                  tokenBytes: tokenBytes, wholePieceFirst: true)
        let vocab = Vocabulary(pieces: pieces, kinds: kinds, decoded: { allBytes[$0] })
        let specials = specialNames.enumerated().map { ($0.element, Int32(base + $0.offset)) }
        self.init(vocabulary: vocab, model: model, specialTokens: specials, bosId: Int32(base), eosId: Int32(base + 1),
                  addsBOS: true, stripsLeadingSpace: false, source: source)
    }
}

/// Standard base64 decoding (RFC 4648), for tiktoken files.
enum Base64 {
    static func decode(_ s: some Collection<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(s.count * 3 / 4)
        var acc: UInt32 = 0
        var bits = 0
        for c in s {
            let v: UInt32
            switch c {
            case 0x41...0x5A: v = UInt32(c - 0x41)
            case 0x61...0x7A: v = UInt32(c - 0x61 + 26)
            case 0x30...0x39: v = UInt32(c - 0x30 + 52)
            case 0x2B: v = 62
            case 0x2F: v = 63
            case 0x3D: continue
            default: return nil
            }
            acc = acc << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        return out
    }
}

extension String {
    func replacingSpaces() -> String { String(String.UnicodeScalarView(unicodeScalars.map { $0 == " " ? "\u{2581}" : $0 })) }
}
