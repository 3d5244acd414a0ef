/// Minimal protobuf wire-format reading and writing, for SentencePiece model files (which we inspect and,
/// for GGUF vocabularies, synthesize) and PJRT's CompileOptionsProto. gRPC messages use protobuf-c instead.
struct ProtoWireReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    enum Field {
        case varint(UInt64)
        case fixed64(UInt64)
        case bytes(UnsafeRawBufferPointer)
        case fixed32(UInt32)
    }

    struct Malformed: Error {}

    var atEnd: Bool { offset >= bytes.count }

    mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < bytes.count, shift < 64 else { throw Malformed() }
            let b = bytes[offset]
            offset += 1
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// The next field number and value; groups (wire types 3/4) are rejected.
    mutating func next() throws -> (Int, Field) {
        let key = try varint()
        let number = Int(key >> 3)
        switch key & 7 {
        case 0: return (number, .varint(try varint()))
        case 1:
            guard bytes.count - offset >= 8 else { throw Malformed() }
            defer { offset += 8 }
            return (number, .fixed64(bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian))
        case 2:
            let n = try varint()
            guard n <= UInt64(bytes.count - offset) else { throw Malformed() }
            defer { offset += Int(n) }
            return (number, .bytes(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Int(n)])))
        case 5:
            guard bytes.count - offset >= 4 else { throw Malformed() }
            defer { offset += 4 }
            return (number, .fixed32(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian))
        default: throw Malformed()
        }
    }
}

struct ProtoWireWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func key(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

    mutating func varintField(_ field: Int, _ v: UInt64) {
        key(field, 0)
        varint(v)
    }

    mutating func int32Field(_ field: Int, _ v: Int32) { varintField(field, UInt64(bitPattern: Int64(v))) }
    mutating func boolField(_ field: Int, _ v: Bool) { varintField(field, v ? 1 : 0) }

    mutating func floatField(_ field: Int, _ v: Float) {
        key(field, 5)
        withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func bytesField(_ field: Int, _ v: some Collection<UInt8>) {
        key(field, 2)
        varint(UInt64(v.count))
        bytes.append(contentsOf: v)
    }

    mutating func stringField(_ field: Int, _ s: String) { bytesField(field, Array(s.utf8)) }
}
