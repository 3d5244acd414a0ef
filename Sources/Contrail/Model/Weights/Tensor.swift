/// A typed tensor whose data lives in a memory-mapped file. `shape` is row-major (outermost first, like
/// numpy): a weight matrix of `rows` output features × `columns` inputs has shape [rows, columns].
public struct Tensor: @unchecked Sendable {
    public let name: String
    public let type: TensorType
    public let shape: [Int]
    /// Start of the tensor's bytes; valid while `file` is alive (the tensor keeps it alive).
    public let data: UnsafeRawPointer
    public let byteCount: Int
    public let file: MappedFile

    public var elementCount: Int { shape.reduce(1, *) }
    /// The innermost dimension: one row of a weight matrix.
    public var columns: Int { shape.last ?? 1 }
    public var rows: Int { shape.isEmpty ? 1 : elementCount / columns }
    public var rowBytes: Int { type.byteCount(elements: columns) ?? 0 }

    /// Dequantizes row `row` into `out` (which holds `columns` floats).
    public func dequantizeRow(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(row >= 0 && row < rows)
        Dequantize.run(type, data + row * rowBytes, count: columns, into: out)
    }

    /// The whole tensor as f32 (for small tensors, tests and tools; the engine reads blocks in place).
    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: elementCount) { buffer, initialized in
            if elementCount > 0 { Dequantize.run(type, data, count: elementCount, into: buffer.baseAddress!) }
            initialized = elementCount
        }
    }

    public func floats(row: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: columns) { buffer, initialized in
            dequantizeRow(row, into: buffer.baseAddress!)
            initialized = columns
        }
    }

    /// Bytes a tensor of `type` and `shape` occupies; throws when the shape is invalid for the type.
    static func requiredBytes(name: String, type: TensorType, shape: [Int], file: String) throws -> Int {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw ModelFileError(file, "tensor \(name) has a negative dimension \(shape)") }
        var elements = 1
        for d in shape {
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            guard !o else { throw ModelFileError(file, "tensor \(name) shape \(shape) overflows") }
            elements = p
        }
        if let last = shape.last, last % type.blockElements != 0 {
            throw ModelFileError(file, "tensor \(name): row length \(last) is not a multiple of \(type.rawValue)'s block of \(type.blockElements)")
        }
        guard let need = type.byteCount(elements: elements) else {
            throw ModelFileError(file, "tensor \(name) shape \(shape) is too large")
        }
        return need
    }

    /// Checks that `shape` holds whole blocks per row and exactly fills `byteCount`.
    static func validate(name: String, type: TensorType, shape: [Int], byteCount: Int, file: String) throws {
        let need = try requiredBytes(name: name, type: type, shape: shape, file: file)
        guard need == byteCount else {
            throw ModelFileError(file, "tensor \(name) (\(type.rawValue) \(shape)) needs \(need) bytes but has \(byteCount)")
        }
    }
}
