/// A GGUF metadata value.
public enum GGUFValue: Sendable, Equatable {
    case uint(UInt64)
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    public var int: Int? {
        switch self {
        case .uint(let v): return v <= UInt64(Int.max) ? Int(v) : nil
        case .int(let v): return Int(v)
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case .float(let v): return v
        case .uint(let v): return Double(v)
        case .int(let v): return Double(v)
        default: return nil
        }
    }

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var array: [GGUFValue]? { if case .array(let a) = self { return a } else { return nil } }
}

/// A GGUF file (v2/v3): typed metadata, a tensor table, and tensor data mapped in place.
public struct GGUFFile: Sendable {
    public let file: MappedFile
    public let version: UInt32
    /// Metadata in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [Tensor]
    public let tensorsByName: [String: Tensor]
    public let alignment: Int
    public let dataOffset: Int

    public var path: String { file.path }

    public init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        var r = ByteReader(file: path, bytes: file.bytes)
        guard file.count >= 4 else { throw ModelFileError(path, "not a GGUF file: only \(file.count) bytes") }
        let magic = try r.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else { // "GGUF"
            throw ModelFileError(path, "not a GGUF file: bad magic \(Self.hex(file.bytes.prefix(4)))")
        }
        version = try r.read(UInt32.self, "version")
        if version == 0x0300_0000 || version == 0x0200_0000 {
            throw ModelFileError(path, "big-endian GGUF is not supported")
        }
        guard version == 2 || version == 3 else {
            throw ModelFileError(path, "unsupported GGUF version \(version) (2 and 3 are supported)")
        }
        let tensorCount = try r.read(UInt64.self, "tensor count")
        let kvCount = try r.read(UInt64.self, "metadata count")
        // Each entry takes at least 8 bytes, so counts beyond the file size are corruption, not big models.
        guard tensorCount <= UInt64(file.count / 8), kvCount <= UInt64(file.count / 8) else {
            throw ModelFileError(path, "truncated or corrupt header: \(tensorCount) tensors and \(kvCount) metadata entries cannot fit in \(file.count) bytes")
        }

        var keys: [String] = []
        var meta: [String: GGUFValue] = [:]
        keys.reserveCapacity(Int(kvCount))
        for _ in 0..<kvCount {
            let key = try Self.readString(&r, "metadata key")
            let type = try r.read(UInt32.self, "type of \(key)")
            let value = try Self.readValue(&r, type: type, key: key, depth: 0)
            if meta.updateValue(value, forKey: key) == nil { keys.append(key) }
        }
        metadataKeys = keys
        metadata = meta

        let alignValue = meta["general.alignment"]?.int ?? 32
        guard alignValue > 0, alignValue & (alignValue - 1) == 0 else {
            throw ModelFileError(path, "general.alignment \(alignValue) is not a power of two")
        }
        alignment = alignValue

        struct Entry { let name: String; let dims: [Int]; let rawType: UInt32; let offset: UInt64 }
        var entries: [Entry] = []
        entries.reserveCapacity(Int(tensorCount))
        for _ in 0..<tensorCount {
            let name = try Self.readString(&r, "tensor name")
            let nDims = try r.read(UInt32.self, "dimension count of \(name)")
            guard nDims <= 8 else { throw ModelFileError(path, "tensor \(name) has \(nDims) dimensions (corrupt table)") }
            var dims: [Int] = []
            for _ in 0..<nDims {
                let d = try r.read(UInt64.self, "dimensions of \(name)")
                guard d <= UInt64(Int32.max) * 64 else { throw ModelFileError(path, "tensor \(name) has dimension \(d) (corrupt table)") }
                dims.append(Int(d))
            }
            let rawType = try r.read(UInt32.self, "type of \(name)")
            let offset = try r.read(UInt64.self, "offset of \(name)")
            entries.append(Entry(name: name, dims: dims, rawType: rawType, offset: offset))
        }
        dataOffset = (r.offset + alignment - 1) / alignment * alignment

        var list: [Tensor] = []
        var byName: [String: Tensor] = [:]
        for e in entries {
            guard let type = TensorType(ggmlType: e.rawType) else {
                throw ModelFileError(path, "tensor \(e.name) has unsupported type \(e.rawType) (\(TensorType.ggmlName(e.rawType)))")
            }
            // GGUF lists dimensions innermost first; we keep numpy order.
            let shape = Array(e.dims.reversed())
            let bytes = try Tensor.requiredBytes(name: e.name, type: type, shape: shape, file: path)
            let start = UInt64(dataOffset).addingReportingOverflow(e.offset)
            guard !start.overflow, start.partialValue <= UInt64(file.count), UInt64(bytes) <= UInt64(file.count) - start.partialValue else {
                throw ModelFileError(path, "tensor \(e.name) extends past the end of the file (bytes \(UInt64(dataOffset) &+ e.offset)..<\(UInt64(dataOffset) &+ e.offset &+ UInt64(bytes)), file has \(file.count))")
            }
            guard byName[e.name] == nil else { throw ModelFileError(path, "tensor \(e.name) appears twice") }
            let t = Tensor(name: e.name, type: type, shape: shape, data: file.base + Int(start.partialValue),
                           byteCount: bytes, file: file)
            list.append(t)
            byName[e.name] = t
        }
        tensors = list
        tensorsByName = byName
    }

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    static func readString(_ r: inout ByteReader, _ what: String) throws -> String {
        let n = try r.read(UInt64.self, "length of \(what)")
        guard n <= UInt64(r.bytes.count - r.offset) else { throw r.truncated(what) }
        let bytes = try r.readBytes(Int(n), what)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func readValue(_ r: inout ByteReader, type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint(UInt64(try r.read(UInt8.self, key)))
        case 1: return .int(Int64(try r.read(Int8.self, key)))
        case 2: return .uint(UInt64(try r.read(UInt16.self, key)))
        case 3: return .int(Int64(try r.read(Int16.self, key)))
        case 4: return .uint(UInt64(try r.read(UInt32.self, key)))
        case 5: return .int(Int64(try r.read(Int32.self, key)))
        case 6: return .float(Double(try r.readFloat(key)))
        case 7:
            let b = try r.read(UInt8.self, key)
            guard b <= 1 else { throw ModelFileError(r.file, "metadata \(key): bool value \(b) is not 0 or 1") }
            return .bool(b == 1)
        case 8: return .string(try readString(&r, key))
        case 9:
            guard depth < 4 else { throw ModelFileError(r.file, "metadata \(key): arrays nested too deeply") }
            let elementType = try r.read(UInt32.self, "array type of \(key)")
            let count = try r.read(UInt64.self, "array length of \(key)")
            guard count <= UInt64(r.bytes.count - r.offset) else { throw r.truncated("array \(key)") }
            var values: [GGUFValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<count { values.append(try readValue(&r, type: elementType, key: key, depth: depth + 1)) }
            return .array(values)
        case 10: return .uint(try r.read(UInt64.self, key))
        case 11: return .int(try r.read(Int64.self, key))
        case 12: return .float(try r.readDouble(key))
        default: throw ModelFileError(r.file, "metadata \(key) has unknown value type \(type)")
        }
    }

    static func hex(_ bytes: Slice<UnsafeRawBufferPointer>) -> String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: " ")
    }
}
