/// What a token id is, in the sense of SentencePiece's piece types and GGUF's `tokenizer.ggml.token_type`.
public enum TokenKind: UInt8, Sendable {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// Every token's raw piece, kind, and the bytes it contributes to decoded text, in flat arrays so decode
/// and streaming never allocate per token.
public struct Vocabulary: Sendable {
    public let pieces: [String]
    public let kinds: [TokenKind]
    private let bytes: [UInt8]
    private let offsets: [Int32]

    public var count: Int { pieces.count }

    /// `decoded(i)` gives the bytes token `i` decodes to (control tokens: their piece text).
    init(pieces: [String], kinds: [TokenKind], decoded: (Int) -> [UInt8]) {
        self.pieces = pieces
        self.kinds = kinds
        var bytes: [UInt8] = []
        var offsets: [Int32] = [0]
        offsets.reserveCapacity(pieces.count + 1)
        for i in 0..<pieces.count {
            bytes.append(contentsOf: decoded(i))
            offsets.append(Int32(bytes.count))
        }
        self.bytes = bytes
        self.offsets = offsets
    }

    public func contains(_ id: Int32) -> Bool { id >= 0 && Int(id) < pieces.count }

    public func kind(_ id: Int32) -> TokenKind { contains(id) ? kinds[Int(id)] : .unknown }

    /// The decoded bytes of `id`; empty for ids outside the vocabulary.
    public func withBytes<R>(_ id: Int32, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        guard contains(id) else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
        let start = Int(offsets[Int(id)]), end = Int(offsets[Int(id) + 1])
        return bytes.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[start..<end])) }
    }

    public func bytes(_ id: Int32) -> [UInt8] { withBytes(id) { Array($0) } }

    /// Ids of a piece string, for looking up special tokens by name.
    public func id(of piece: String) -> Int32? {
        pieces.firstIndex(of: piece).map { Int32($0) }
    }
}
