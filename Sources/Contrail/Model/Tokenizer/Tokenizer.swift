/// Turns plain text (no special tokens) into ids; the algorithm part of a tokenizer.
protocol TokenizerModel: Sendable {
    func encode(_ text: UnsafeBufferPointer<UInt8>, into ids: inout [Int32])
}

/// The chat format a vocabulary was trained for; picks the chat template and the end-of-turn stop token.
public enum ChatFamily: String, Sendable {
    /// `<|im_start|>role\n…<|im_end|>` (SmolLM2, Qwen).
    case chatML = "chatml"
    /// `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`.
    case llama3
    /// `<start_of_turn>user\n…<end_of_turn>` (Gemma 1/2/3).
    case gemma
    /// `[INST] … [/INST]`.
    case llama2
}

/// A tokenizer: special-token handling, BOS, stop tokens and decoding shared by every algorithm
/// (libsentencepiece, byte-level BPE).
public final class Tokenizer: Sendable {
    public let vocabulary: Vocabulary
    let model: any TokenizerModel
    let specials: SpecialTokenMatcher
    public let bosId: Int32?
    public let eosId: Int32?
    /// Whether prompts start with BOS by default (from the tokenizer's own configuration).
    public let addsBOS: Bool
    /// SentencePiece with a dummy prefix: decoding drops the space it added in front of the first word.
    let stripsLeadingSpace: Bool
    public let family: ChatFamily
    public let chatTemplate: ChatTemplate
    /// Ids that end generation: EOS and the family's end-of-turn tokens.
    public let stopIds: Set<Int32>
    /// Where the tokenizer came from, for messages.
    public let source: String
    /// The model file ships a chat template: an instruct / chat model.
    public let hasChatTemplate: Bool

    init(vocabulary: Vocabulary, model: any TokenizerModel, specialTokens: [(String, Int32)], bosId: Int32?, eosId: Int32?,
         addsBOS: Bool, stripsLeadingSpace: Bool, source: String, jinjaTemplate: String? = nil) {
        self.vocabulary = vocabulary
        self.model = model
        self.specials = SpecialTokenMatcher(specialTokens)
        self.bosId = bosId
        self.eosId = eosId
        self.addsBOS = addsBOS && bosId != nil
        self.stripsLeadingSpace = stripsLeadingSpace
        self.source = source
        let has = { (p: String) in vocabulary.id(of: p) }
        var stops: Set<Int32> = []
        if let e = eosId { stops.insert(e) }
        if has("<|im_start|>") != nil {
            family = .chatML
            if let e = has("<|im_end|>") { stops.insert(e) }
        } else if has("<|start_header_id|>") != nil {
            family = .llama3
            for p in ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"] { if let e = has(p) { stops.insert(e) } }
        } else if has("<start_of_turn>") != nil {
            family = .gemma
            if let e = has("<end_of_turn>") { stops.insert(e) }
        } else {
            family = .llama2
        }
        stopIds = stops
        chatTemplate = ChatTemplate(family: family, jinja: jinjaTemplate)
        hasChatTemplate = jinjaTemplate != nil
    }

    public var vocabSize: Int { vocabulary.count }

    /// Encodes `text`. Special tokens written in the text become their ids unless `parseSpecial` is false;
    /// BOS is prepended when `addBOS` (default: the tokenizer's configuration) says so.
    public func encode(_ text: String, addBOS: Bool? = nil, parseSpecial: Bool = true) -> [Int32] {
        var ids: [Int32] = []
        if addBOS ?? addsBOS, let bos = bosId { ids.append(bos) }
        var text = text
        text.withUTF8 { utf8 in
            guard parseSpecial else {
                model.encode(utf8, into: &ids)
                return
            }
            for segment in specials.split(utf8) {
                switch segment {
                case .special(let id): ids.append(id)
                case .text(let r): model.encode(UnsafeBufferPointer(rebasing: utf8[r]), into: &ids)
                }
            }
        }
        return ids
    }

    /// Decodes ids to text. Control tokens (BOS, EOS, `<|im_end|>`…) appear as their text unless
    /// `skipSpecial`; invalid UTF-8 becomes U+FFFD. Streaming pieces concatenate to exactly this.
    public func decode(_ ids: some Sequence<Int32>, skipSpecial: Bool = false) -> String {
        var d = StreamingDetokenizer(tokenizer: self, skipSpecial: skipSpecial)
        var out = ""
        for id in ids { out += d.push(id) }
        out += d.finish()
        return out
    }

    /// The raw vocabulary piece of `id` (`▁Paris`, `<0x0A>`, `Ġthe`), or nil outside the vocabulary.
    public func piece(_ id: Int32) -> String? { vocabulary.contains(id) ? vocabulary.pieces[Int(id)] : nil }

    /// Control tokens (BOS, EOS, `<|im_end|>`…), which `decode(skipSpecial:)` drops.
    public func isSpecial(_ id: Int32) -> Bool { vocabulary.kind(id) == .control }
}

/// Feeds ids one at a time and returns text pieces that are always valid UTF-8: bytes of an incomplete
/// character (byte-fallback tokens such as `<0xE2>`, or a BPE token ending mid-character) are held until
/// the character completes. The pieces concatenate to exactly `Tokenizer.decode` of the same ids.
public struct StreamingDetokenizer: Sendable {
    let tokenizer: Tokenizer
    let skipSpecial: Bool
    private var pending: [UInt8] = []
    private var atStart: Bool

    public init(tokenizer: Tokenizer, skipSpecial: Bool = false, atStart: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
        self.atStart = atStart
        pending.reserveCapacity(16)
    }

    /// Adds one token; returns the text that became complete (often the token's text, sometimes "").
    public mutating func push(_ id: Int32) -> String {
        let kind = tokenizer.vocabulary.kind(id)
        if skipSpecial && kind == .control { return "" }
        tokenizer.vocabulary.withBytes(id) { bytes in
            var b = bytes[...]
            if atStart && tokenizer.stripsLeadingSpace && kind != .control {
                if b.first == 0x20 { b = b.dropFirst() }
            }
            if kind != .control { atStart = false }
            pending.append(contentsOf: b)
        }
        return drain(final: false)
    }

    /// Bytes of an incomplete character are being held.
    public var hasPending: Bool { !pending.isEmpty }

    /// Flushes held bytes at the end of a stream (an incomplete character becomes U+FFFD).
    public mutating func finish() -> String { drain(final: true) }

    private mutating func drain(final: Bool) -> String {
        if pending.isEmpty { return "" }
        let keep = final ? 0 : Self.incompleteSuffixLength(pending)
        let n = pending.count - keep
        if n == 0 { return "" }
        let text = String(decoding: pending[0..<n], as: UTF8.self)
        pending.removeFirst(n)
        return text
    }

    /// Length of a trailing sequence that is a valid but incomplete UTF-8 prefix (0…3 bytes).
    static func incompleteSuffixLength(_ b: [UInt8]) -> Int {
        let n = b.count
        var i = n - 1
        var continuation = 0
        while i >= 0, continuation < 3, b[i] & 0xC0 == 0x80 {
            continuation += 1
            i -= 1
        }
        guard i >= 0 else { return 0 }
        let lead = b[i]
        let need: Int
        switch lead {
        case 0xC2...0xDF: need = 1
        case 0xE0...0xEF: need = 2
        case 0xF0...0xF4: need = 3
        default: return 0
        }
        guard continuation < need else { return 0 }
        // The second byte of some sequences is restricted; a prefix that can never complete is not held.
        if continuation >= 1 {
            let second = b[i + 1]
            switch lead {
            case 0xE0: if second < 0xA0 { return 0 }
            case 0xED: if second > 0x9F { return 0 }
            case 0xF0: if second < 0x90 { return 0 }
            case 0xF4: if second > 0x8F { return 0 }
            default: break
            }
        }
        return continuation + 1
    }
}
