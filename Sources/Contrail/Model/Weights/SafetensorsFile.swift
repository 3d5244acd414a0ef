/// One .safetensors file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`, then the data, mapped in place.
public struct SafetensorsFile: Sendable {
    public let file: MappedFile
    public let metadata: [String: String]
    public let tensors: [Tensor]
    public let tensorsByName: [String: Tensor]

    public var path: String { file.path }

    /// The format's own bound on the header, which also keeps a corrupt length from allocating wildly.
    static let maxHeaderBytes = 100_000_000

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.file = file
        var r = ByteReader(file: path, bytes: file.bytes)
        let headerLength = try r.read(UInt64.self, "header length")
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw ModelFileError(path, "not a safetensors file: header length \(headerLength) is implausible")
        }
        let headerBytes = try r.readBytes(Int(headerLength), "JSON header")
        let header: JSON
        do {
            header = try JSON.parse(headerBytes)
        } catch let e as JSONError {
            throw ModelFileError(path, "not a safetensors file: header is not JSON (\(e))")
        }
        guard let members = header.object else { throw ModelFileError(path, "safetensors header is not a JSON object") }
        let dataStart = 8 + Int(headerLength)
        let dataBytes = file.count - dataStart

        var meta: [String: String] = [:]
        var list: [Tensor] = []
        var byName: [String: Tensor] = [:]
        for (name, entry) in members {
            if name == "__metadata__" {
                for (k, v) in entry.object ?? [] { meta[k] = v.string }
                continue
            }
            guard let dtypeName = entry["dtype"]?.string else { throw ModelFileError(path, "tensor \(name) has no dtype") }
            guard let type = TensorType(safetensorsDType: dtypeName) else {
                throw ModelFileError(path, "tensor \(name) has unsupported dtype \(dtypeName) (supported: F32, F16, BF16, I8)")
            }
            guard let shapeValues = entry["shape"]?.array else { throw ModelFileError(path, "tensor \(name) has no shape") }
            let shape = try shapeValues.map { v -> Int in
                guard let d = v.int, d >= 0 else { throw ModelFileError(path, "tensor \(name) has an invalid shape \(JSON.array(shapeValues).serialized)") }
                return d
            }
            guard let offsets = entry["data_offsets"]?.array, offsets.count == 2,
                  let begin = offsets[0].int, let end = offsets[1].int, begin >= 0, begin <= end else {
                throw ModelFileError(path, "tensor \(name) has invalid data_offsets")
            }
            guard end <= dataBytes else {
                throw ModelFileError(path, "tensor \(name) extends past the end of the file (data bytes \(begin)..<\(end), file has \(dataBytes) data bytes)")
            }
            try Tensor.validate(name: name, type: type, shape: shape, byteCount: end - begin, file: path)
            let t = Tensor(name: name, type: type, shape: shape, data: file.base + dataStart + begin,
                           byteCount: end - begin, file: file)
            guard byName[name] == nil else { throw ModelFileError(path, "tensor \(name) appears twice") }
            list.append(t)
            byName[name] = t
        }
        metadata = meta
        tensors = list
        tensorsByName = byName
    }
}
