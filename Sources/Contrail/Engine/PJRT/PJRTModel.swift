import CShims

/// A model on PJRT devices: weights uploaded once to each device group that runs it (prefill and generate
/// groups differ when serving disaggregated) — whole on one device, or cut across a tensor-parallel group
/// as the programs' shardings say — and programs compiled from `ModelLowering` on first use per shape.
public final class PJRTModel: @unchecked Sendable {
    public let config: ModelConfig
    public let client: PJRTClient
    let lowering: ModelLowering
    /// Per device group: the weight arguments followed by the two inverse-frequency vectors.
    private let groupWeights: [[Int]: [DeviceArray]]
    /// Bytes of weights on each device (a part of them when tensor-parallel).
    public let weightBytes: Int
    /// Devices per group (the tensor-parallel degree).
    public var partitions: Int { lowering.partitions }
    /// Compiled programs by role, shape and group ("prefill 64 @[0, 1]"), so a step never rebuilds its text.
    private let programs = Locked<[String: PJRTExecutable]>([:])
    private let compileTime = Locked<(programs: Int, nanos: UInt64)>((0, 0))

    /// Programs lowered and compiled so far, and the seconds that took.
    public var compiled: (programs: Int, seconds: Double) {
        compileTime.withLock { ($0.programs, Double($0.nanos) / 1e9) }
    }

    /// `weights`: f32, bf16 (half the device memory) or int8 with per-row scales (a quarter); `kvCache`:
    /// how decode caches are stored (f32, bf16, int8 with per-token scales). `groups`: the device groups
    /// (indices into the client's devices) that run the model, all of one size.
    public init(_ checkpoint: Checkpoint, client: PJRTClient, weights storage: String = "f32", kvCache: KVCacheStorage = .f32,
                groups: [[Int]] = [[0]]) throws {
        let w = try ModelWeights(checkpoint)
        config = checkpoint.config
        self.client = client
        guard let kind = ModelLowering.WeightStorage(rawValue: storage) else {
            throw PJRTError(code: -1, message: "weights must be f32, bf16 or int8, got \(storage)")
        }
        let n = groups.first?.count ?? 1
        guard !groups.isEmpty, groups.allSatisfy({ $0.count == n }) else {
            throw PJRTError(code: -1, message: "device groups \(groups) must be of one size")
        }
        for g in groups where !(g.allSatisfy { client.devices.indices.contains($0) } && Set(g).count == g.count) {
            throw PJRTError(code: -1, message: "devices \(g) asked for; the \(client.platform) client has \(client.deviceCount)")
        }
        lowering = ModelLowering(w, storage: kind, kvStorage: kvCache, partitions: n)
        let arrays = ModelLowering.weightArrays(w, lowering)
        let shardings = lowering.weightShardings
        precondition(arrays.count == shardings.count, "weight arrays and declared arguments differ")
        weightBytes = zip(arrays, shardings).reduce(0) { sum, e in sum + e.0.0.byteCount / (e.1 == .replicated ? 1 : n) }
        let frequencies = lowering.inverseFrequencies(frequencyFactors: w.ropeFrequencyFactors?.floats())
        var perGroup: [[Int]: [DeviceArray]] = [:]
        for g in Set(groups) {
            var buffers: [DeviceArray] = []
            for ((array, shape), sharding) in zip(arrays, shardings) {
                buffers.append(DeviceArray(try g.indices.map { i throws(PJRTError) in
                    let (part, partShape) = array.part(i, of: n, shape: shape, sharding)
                    switch part {
                    case .f32(let v): return try client.upload(v, shape: partShape, device: g[i])
                    case .bf16(let v): return try client.upload(v.map(BFloat16Bits.init), shape: partShape, device: g[i])
                    case .i8(let v): return try client.upload(v, shape: partShape, device: g[i])
                    }
                }))
            }
            for f in frequencies { buffers.append(try client.upload(f, shape: [f.count], on: g)) }
            perGroup[g] = buffers
        }
        groupWeights = perGroup
    }

    /// The weight arguments (then the inverse frequencies) on `group`.
    func weights(on group: [Int]) throws(PJRTError) -> [DeviceArray] {
        guard let w = groupWeights[group] else { throw PJRTError(code: -1, message: "the model's weights are not on devices \(group)") }
        return w
    }

    /// The executable for `key` on `group`, lowering and compiling it on first use.
    func program(_ key: String, on group: [Int], _ lower: (ModelLowering) -> String) throws(PJRTError) -> PJRTExecutable {
        let fullKey = "\(key) @\(group)"
        if let e = programs.withLock({ $0[fullKey] }) { return e }
        let start = contrail_now_ns()
        let e = try client.compile(lower(lowering), devices: group)
        let spent = contrail_now_ns() - start
        compileTime.withLock { $0 = ($0.programs + 1, $0.nanos + spent) }
        programs.withLock { $0[fullKey] = e }
        return e
    }

    /// The logits at the prompt's last real position (`trueLength` of the padded `tokens`) and its keys
    /// and values ([layers, padded length, kvDim] each, on `group`, cut by KV head when tensor-parallel).
    public func prefill(_ tokens: [Int32], trueLength: Int? = nil, on group: [Int] = [0]) throws(PJRTError)
        -> (logits: [Float], keys: DeviceArray, values: DeviceArray)
    {
        let length = trueLength ?? tokens.count
        guard length >= 1 && length <= tokens.count else { throw PJRTError(code: -1, message: "prefill: true length \(length) of \(tokens.count) tokens") }
        let exe = try program("prefill \(tokens.count)", on: group) { $0.prefill(length: tokens.count) }
        let out = try exe.execute(try weights(on: group) + [client.upload(tokens, shape: [tokens.count], on: group), client.upload([Int32(length)], shape: [], on: group)],
                                  devices: group)
        guard out.count == 3 else { throw PJRTError(code: -1, message: "prefill returned \(out.count) outputs, expected 3") }
        return (try out[0].parts[0].download(as: Float.self), out[1], out[2])
    }
}
