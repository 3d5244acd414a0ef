/// The splitting rules byte-level BPE vocabularies were trained with, written as hand-made matchers over
/// Unicode scalars (no regex engine): each is exactly the alternation of the named regex, tried in order.
public enum PreTokenizer: String, Sendable {
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// SmolLM: every digit on its own, then GPT-2's rules on the rest.
    case smollm

    /// Splits `text` into pieces (ranges of UTF-8 bytes).
    func split(_ text: UnsafeBufferPointer<UInt8>) -> [Range<Int>] {
        // Decode to scalars once, remembering each scalar's byte offset.
        var scalars: [Unicode.Scalar] = []
        var offsets: [Int] = []
        scalars.reserveCapacity(text.count)
        offsets.reserveCapacity(text.count + 1)
        var iterator = text.makeIterator()
        var decoder = UTF8()
        var offset = 0
        loop: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let s):
                scalars.append(s)
                offsets.append(offset)
                offset += UTF8.width(s)
            case .emptyInput: break loop
            case .error:
                // Text reaching us is a Swift String, so always valid; keep going defensively.
                scalars.append("\u{FFFD}")
                offsets.append(offset)
                offset += 1
            }
        }
        offsets.append(text.count)
        var pieces: [Range<Int>] = []
        var i = 0
        let n = scalars.count
        while i < n {
            let end: Int
            switch self {
            case .llama3: end = Self.llama3(scalars, i)
            case .gpt2: end = Self.gpt2(scalars, i, n)
            case .smollm:
                if Self.isNumber(scalars[i]) {
                    end = i + 1
                } else {
                    // GPT-2 rules on the run up to the next digit.
                    var limit = i
                    while limit < n, !Self.isNumber(scalars[limit]) { limit += 1 }
                    end = Self.gpt2(scalars, i, limit)
                }
            }
            pieces.append(offsets[i]..<offsets[end])
            i = end
        }
        return pieces
    }

    @inline(__always) static func isLetter(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return (s.value | 0x20) >= 0x61 && (s.value | 0x20) <= 0x7A }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    @inline(__always) static func isNumber(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value >= 0x30 && s.value <= 0x39 }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    @inline(__always) static func isSpace(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value == 0x20 || (s.value >= 0x09 && s.value <= 0x0D) }
        return s.properties.isWhitespace
    }

    @inline(__always) static func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\r" || s == "\n" }

    /// `'s|'t|'re|'ve|'m|'ll|'d`, optionally case-insensitive; returns the match length or 0.
    static func contraction(_ s: [Unicode.Scalar], _ i: Int, _ n: Int, ignoreCase: Bool) -> Int {
        guard s[i] == "'", i + 1 < n else { return 0 }
        func lower(_ c: Unicode.Scalar) -> Unicode.Scalar {
            ignoreCase && c.value >= 0x41 && c.value <= 0x5A ? Unicode.Scalar(c.value + 32)! : c
        }
        let a = lower(s[i + 1])
        if a == "s" || a == "t" || a == "m" || a == "d" { return 2 }
        guard i + 2 < n else { return 0 }
        let b = lower(s[i + 2])
        if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { return 3 }
        return 0
    }

    /// The whitespace alternatives shared by both rule sets: `\s+(?!\S)|\s+`, and for Llama 3 first `\s*[\r\n]+`.
    static func whitespace(_ s: [Unicode.Scalar], _ i: Int, _ n: Int, newlineRule: Bool) -> Int {
        var e = i
        while e < n, isSpace(s[e]) { e += 1 }
        if newlineRule {
            var lastNewline = -1
            for k in i..<e where isNewline(s[k]) { lastNewline = k }
            if lastNewline >= 0 { return lastNewline + 1 }
        }
        if e == n { return e }          // \s+ at the end of input
        if e - i >= 2 { return e - 1 }  // \s+(?!\S): leave the last space to the next word
        return e                        // \s+
    }

    static func llama3(_ s: [Unicode.Scalar], _ i: Int) -> Int {
        let n = s.count
        let c = s[i]
        let k = contraction(s, i, n, ignoreCase: true)
        if k > 0 { return i + k }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        var j = i
        if isLetter(c) {
            j = i
        } else if !isNewline(c) && !isNumber(c) && i + 1 < n && isLetter(s[i + 1]) {
            j = i + 1
        } else {
            j = -1
        }
        if j >= 0 {
            while j < n, isLetter(s[j]) { j += 1 }
            return j
        }
        // \p{N}{1,3}
        if isNumber(c) {
            j = i
            while j < n, j - i < 3, isNumber(s[j]) { j += 1 }
            return j
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        j = c == " " ? i + 1 : i
        if j < n, !isSpace(s[j]), !isLetter(s[j]), !isNumber(s[j]) {
            while j < n, !isSpace(s[j]), !isLetter(s[j]), !isNumber(s[j]) { j += 1 }
            while j < n, isNewline(s[j]) { j += 1 }
            return j
        }
        // Only whitespace can remain here.
        return whitespace(s, i, n, newlineRule: true)
    }

    /// GPT-2's rules on `s[i..<n]` (n may stop short of the text for SmolLM's digit split).
    static func gpt2(_ s: [Unicode.Scalar], _ i: Int, _ n: Int) -> Int {
        let k = contraction(s, i, n, ignoreCase: false)
        if k > 0 { return i + k }
        let j0 = s[i] == " " && i + 1 < n ? i + 1 : i
        for cls in 0..<3 {
            let matches: (Unicode.Scalar) -> Bool
            switch cls {
            case 0: matches = isLetter
            case 1: matches = isNumber
            default: matches = { !isSpace($0) && !isLetter($0) && !isNumber($0) }
            }
            var j = j0
            if matches(s[j]) {
                while j < n, matches(s[j]) { j += 1 }
                return j
            }
        }
        return whitespace(s, i, n, newlineRule: false)
    }
}

/// GPT-2's reversible map between bytes and printable characters, in which byte-level BPE vocabularies
/// (tokenizer.json, GGUF `gpt2`) spell their tokens.
enum ByteLevel {
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    static let scalarToByte: [UInt32: UInt8] = {
        var m: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { m[s.value] = UInt8(b) }
        return m
    }()

    /// The bytes a byte-level token string stands for, or nil if it uses characters outside the map.
    static func bytes(_ token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            guard let b = scalarToByte[s.value] else { return nil }
            out.append(b)
        }
        return out
    }
}
