/// Byte-level BPE (Llama 3, SmolLM2, GPT-2 family), written in Swift: pre-tokenize, then merge each
/// piece's bytes by rank until no ranked pair remains.
struct BytePairModel: TokenizerModel {
    enum Ranking: Sendable {
        /// An explicit merge list (tokenizer.json, GGUF): key left<<32|right → rank<<32|merged id.
        case merges([UInt64: UInt64])
        /// tiktoken: a pair's rank is the rank (= id) of the token its bytes concatenate to.
        case tokenRanks
    }

    let preTokenizer: PreTokenizer
    let ranking: Ranking
    /// Token id of each byte value.
    let byteIds: [Int32]
    /// Full token bytes → id, for tiktoken ranks and the whole-piece shortcut.
    let idsByBytes: [[UInt8]: Int32]
    let tokenBytes: [[UInt8]]
    /// Llama 3 (`ignore_merges`, and tiktoken): a piece that is itself a token is emitted whole.
    let wholePieceFirst: Bool

    func encode(_ text: UnsafeBufferPointer<UInt8>, into ids: inout [Int32]) {
        var parts: [Int32] = []
        for r in preTokenizer.split(text) {
            let piece = UnsafeBufferPointer(rebasing: text[r])
            if wholePieceFirst || piece.count == 1, let id = idsByBytes[Array(piece)] {
                ids.append(id)
                continue
            }
            parts.removeAll(keepingCapacity: true)
            for b in piece { parts.append(byteIds[Int(b)]) }
            merge(&parts)
            ids.append(contentsOf: parts)
        }
    }

    /// (rank, merged id) of an adjacent pair, or nil if the pair never merges.
    @inline(__always) func rank(_ a: Int32, _ b: Int32) -> (Int, Int32)? {
        switch ranking {
        case .merges(let table):
            guard let v = table[UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))] else { return nil }
            return (Int(v >> 32), Int32(truncatingIfNeeded: v))
        case .tokenRanks:
            guard let id = idsByBytes[tokenBytes[Int(a)] + tokenBytes[Int(b)]] else { return nil }
            return (Int(id), id)
        }
    }

    /// Repeatedly merges the lowest-ranked adjacent pair (leftmost on ties).
    func merge(_ parts: inout [Int32]) {
        guard parts.count > 1 else { return }
        // Cache each adjacent pair's rank; only the neighbours of a merge change.
        var ranks: [(Int, Int32)?] = (0..<parts.count - 1).map { rank(parts[$0], parts[$0 + 1]) }
        while true {
            var best = -1
            var bestRank = Int.max
            for (i, r) in ranks.enumerated() { if let r, r.0 < bestRank { bestRank = r.0; best = i } }
            if best < 0 { return }
            parts[best] = ranks[best]!.1
            parts.remove(at: best + 1)
            ranks.remove(at: best)
            if best < ranks.count { ranks[best] = rank(parts[best], parts[best + 1]) }
            if best > 0 { ranks[best - 1] = rank(parts[best - 1], parts[best]) }
        }
    }
}
