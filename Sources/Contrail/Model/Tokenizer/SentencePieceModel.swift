import CShims

/// libsentencepiece behind CShims' extern "C" functions. Owns the processor.
final class SentencePieceModel: TokenizerModel, @unchecked Sendable {
    // The processor is immutable after load and libsentencepiece's Encode is const and thread-safe.
    private let handle: OpaquePointer

    init(serialized: [UInt8], source: String) throws {
        var error = [CChar](repeating: 0, count: 512)
        let h = serialized.withUnsafeBytes { raw in
            contrail_spm_load(raw.baseAddress, raw.count, &error, error.count)
        }
        guard let h else {
            let message = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw ModelFileError(source, "not a SentencePiece model: \(message)")
        }
        handle = h
    }

    deinit { contrail_spm_free(handle) }

    var vocabSize: Int { Int(contrail_spm_vocab_size(handle)) }
    var bosId: Int32 { contrail_spm_bos_id(handle) }
    var eosId: Int32 { contrail_spm_eos_id(handle) }

    func encode(_ text: UnsafeBufferPointer<UInt8>, into ids: inout [Int32]) {
        guard text.count > 0 else { return }
        var buffer = [Int32](repeating: 0, count: text.count + 8)
        let base = UnsafeRawPointer(text.baseAddress!).assumingMemoryBound(to: CChar.self)
        var n = contrail_spm_encode(handle, base, text.count, &buffer, buffer.count)
        if n > Int64(buffer.count) {
            buffer = [Int32](repeating: 0, count: Int(n))
            n = contrail_spm_encode(handle, base, text.count, &buffer, buffer.count)
        }
        if n > 0 { ids.append(contentsOf: buffer[0..<Int(n)]) }
    }

    /// libsentencepiece's own decode, as an independent check of ours in tests.
    func referenceDecode(_ ids: [Int32]) -> String {
        var out = [UInt8](repeating: 0, count: ids.count * 16 + 16)
        var n = out.withUnsafeMutableBufferPointer { o in
            o.withMemoryRebound(to: CChar.self) { contrail_spm_decode(handle, ids, ids.count, $0.baseAddress, $0.count) }
        }
        if n > Int64(out.count) {
            out = [UInt8](repeating: 0, count: Int(n))
            n = out.withUnsafeMutableBufferPointer { o in
                o.withMemoryRebound(to: CChar.self) { contrail_spm_decode(handle, ids, ids.count, $0.baseAddress, $0.count) }
            }
        }
        return n <= 0 ? "" : String(decoding: out[0..<Int(n)], as: UTF8.self)
    }
}

/// The parts of a SentencePiece ModelProto we read ourselves: pieces with their types, and the normalizer's
/// dummy-prefix flag. Field numbers are sentencepiece_model.proto's.
struct SentencePieceProto {
    var pieces: [(piece: String, score: Float, kind: TokenKind)] = []
    var addDummyPrefix = true
    var byteFallback = false

    init(pieces: [(piece: String, score: Float, kind: TokenKind)], addDummyPrefix: Bool, byteFallback: Bool) {
        self.pieces = pieces
        self.addDummyPrefix = addDummyPrefix
        self.byteFallback = byteFallback
    }

    init(parsing bytes: UnsafeRawBufferPointer, source: String) throws {
        var r = ProtoWireReader(bytes: bytes)
        do {
            while !r.atEnd {
                let (field, value) = try r.next()
                switch (field, value) {
                case (1, .bytes(let b)):
                    var p = ProtoWireReader(bytes: b)
                    var piece = "", score: Float = 0, kind = TokenKind.normal
                    while !p.atEnd {
                        switch try p.next() {
                        case (1, .bytes(let s)): piece = String(decoding: s, as: UTF8.self)
                        case (2, .fixed32(let f)): score = Float(bitPattern: f)
                        case (3, .varint(let t)): kind = TokenKind(rawValue: UInt8(truncatingIfNeeded: t)) ?? .normal
                        default: break
                        }
                    }
                    pieces.append((piece, score, kind))
                case (2, .bytes(let b)):
                    var p = ProtoWireReader(bytes: b)
                    while !p.atEnd { if case (35, .varint(let v)) = try p.next() { byteFallback = v != 0 } }
                case (3, .bytes(let b)):
                    var p = ProtoWireReader(bytes: b)
                    while !p.atEnd { if case (3, .varint(let v)) = try p.next() { addDummyPrefix = v != 0 } }
                default: break
                }
            }
        } catch {
            throw ModelFileError(source, "not a SentencePiece model: malformed protobuf at byte \(r.offset)")
        }
        guard !pieces.isEmpty else { throw ModelFileError(source, "not a SentencePiece model: no pieces") }
    }

    /// A ModelProto that libsentencepiece loads: BPE over these pieces and scores, identity normalization,
    /// whitespace escaped as ▁. This is how GGUF files with an SPM (`llama`) vocabulary get tokenized.
    func serialized(unkPiece: String?, bosPiece: String?, eosPiece: String?, padPiece: String?) -> [UInt8] {
        var w = ProtoWireWriter()
        for p in pieces {
            var sp = ProtoWireWriter()
            sp.stringField(1, p.piece)
            sp.floatField(2, p.score)
            sp.varintField(3, UInt64(p.kind.rawValue))
            w.bytesField(1, sp.bytes)
        }
        var trainer = ProtoWireWriter()
        trainer.varintField(3, 2)  // model_type = BPE
        trainer.int32Field(4, Int32(pieces.count))
        trainer.boolField(35, byteFallback)
        // Ids come from the pieces themselves; -1 disables a piece the vocabulary lacks.
        func idOf(_ piece: String?) -> Int32 {
            guard let piece, let i = pieces.firstIndex(where: { $0.piece == piece }) else { return -1 }
            return Int32(i)
        }
        trainer.int32Field(40, idOf(unkPiece))
        trainer.int32Field(41, idOf(bosPiece))
        trainer.int32Field(42, idOf(eosPiece))
        trainer.int32Field(43, idOf(padPiece))
        if let unkPiece { trainer.stringField(45, unkPiece) }
        if let bosPiece { trainer.stringField(46, bosPiece) }
        if let eosPiece { trainer.stringField(47, eosPiece) }
        if let padPiece { trainer.stringField(48, padPiece) }
        w.bytesField(2, trainer.bytes)
        var normalizer = ProtoWireWriter()
        normalizer.stringField(1, "identity")
        normalizer.boolField(3, addDummyPrefix)
        normalizer.boolField(4, false)  // remove_extra_whitespaces
        normalizer.boolField(5, true)  // escape_whitespaces
        w.bytesField(3, normalizer.bytes)
        return w.bytes
    }

    /// Decoded bytes of each piece: ▁ → space, `<0xNN>` byte pieces → that byte, control pieces → their text
    /// (the detokenizer drops them when asked), unknown → SentencePiece's " ⁇ ".
    func decodedBytes(_ i: Int) -> [UInt8] {
        let p = pieces[i]
        switch p.kind {
        case .byte:
            if let b = Self.byteValue(p.piece) { return [b] }
            return Array(p.piece.utf8)
        case .unknown:
            return Array(" \u{2047} ".utf8)
        case .control, .unused:
            return Array(p.piece.utf8)
        case .normal, .userDefined:
            var out: [UInt8] = []
            out.reserveCapacity(p.piece.utf8.count)
            for scalar in p.piece.unicodeScalars {
                if scalar == "\u{2581}" { out.append(0x20) } else { out.append(contentsOf: String(scalar).utf8) }
            }
            return out
        }
    }

    static func byteValue(_ piece: String) -> UInt8? {
        let u = Array(piece.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }  // <0xNN>
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }
}
