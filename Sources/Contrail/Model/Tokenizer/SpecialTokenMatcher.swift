/// Finds special tokens written in text (`<|im_start|>`, `<start_of_turn>`, `<|eot_id|>`) so they encode
/// to their ids, as Hugging Face tokenizers and llama.cpp's server do for prompts.
struct SpecialTokenMatcher: Sendable {
    /// Candidates by first byte, longest first, so the longest special at a position wins.
    private let byFirstByte: [[(bytes: [UInt8], id: Int32)]]

    init(_ specials: [(String, Int32)]) {
        var table = [[(bytes: [UInt8], id: Int32)]](repeating: [], count: 256)
        for (text, id) in specials where !text.isEmpty {
            let b = Array(text.utf8)
            table[Int(b[0])].append((b, id))
        }
        for i in 0..<256 { table[i].sort { $0.bytes.count > $1.bytes.count } }
        byFirstByte = table
    }

    enum Segment: Equatable {
        case text(Range<Int>)
        case special(Int32)
    }

    /// Splits UTF-8 `text` into plain ranges and special-token ids, left to right.
    func split(_ text: UnsafeBufferPointer<UInt8>) -> [Segment] {
        var out: [Segment] = []
        var plainStart = 0
        var i = 0
        let n = text.count
        outer: while i < n {
            let candidates = byFirstByte[Int(text[i])]
            if !candidates.isEmpty {
                for c in candidates where c.bytes.count <= n - i {
                    var equal = true
                    for k in 1..<c.bytes.count where text[i + k] != c.bytes[k] {
                        equal = false
                        break
                    }
                    if equal {
                        if plainStart < i { out.append(.text(plainStart..<i)) }
                        out.append(.special(c.id))
                        i += c.bytes.count
                        plainStart = i
                        continue outer
                    }
                }
            }
            i += 1
        }
        if plainStart < n { out.append(.text(plainStart..<n)) }
        return out
    }
}
