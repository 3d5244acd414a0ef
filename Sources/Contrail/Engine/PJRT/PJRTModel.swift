/// A model on PJRT devices: weights uploaded once to each device that runs it (prefill and generate
/// devices differ when serving disaggregated), programs compiled from `ModelLowering` on first use per
/// shape, runnable on any of the client's devices.
public final class PJRTModel: @unchecked Sendable {
    public let config: ModelConfig
    public let client: PJRTClient
    let lowering: ModelLowering
    /// Per device index: the weight buffers followed by the two inverse-frequency vectors.
    private let deviceWeights: [Int: [PJRTBuffer]]
    /// Bytes of weights uploaded to each device.
    public let weightBytes: Int
    /// Compiled programs by role and shape ("prefill 64", "generate 16x1024"), so a step never rebuilds
    /// its program text.
    private let programs = Locked<[String: PJRTExecutable]>([:])

    /// `weights`: f32, bf16 (half the device memory) or int8 with per-row scales (a quarter).
    public init(_ checkpoint: Checkpoint, client: PJRTClient, weights storage: String = "f32", devices: Set<Int> = [0]) throws {
        let w = try ModelWeights(checkpoint)
        config = checkpoint.config
        self.client = client
        guard let kind = ModelLowering.WeightStorage(rawValue: storage) else {
            throw PJRTError(code: -1, message: "weights must be f32, bf16 or int8, got \(storage)")
        }
        lowering = ModelLowering(w, storage: kind)
        let arrays = ModelLowering.weightArrays(w, lowering)
        weightBytes = arrays.reduce(0) { $0 + $1.0.byteCount }
        let frequencies = lowering.inverseFrequencies(frequencyFactors: w.ropeFrequencyFactors?.floats())
        var perDevice: [Int: [PJRTBuffer]] = [:]
        for d in devices.sorted() {
            var buffers: [PJRTBuffer] = []
            for (array, shape) in arrays {
                switch array {
                case .f32(let v): buffers.append(try client.upload(v, shape: shape, device: d))
                case .bf16(let v): buffers.append(try client.upload(v.map(BFloat16Bits.init), shape: shape, device: d))
                case .i8(let v): buffers.append(try client.upload(v, shape: shape, device: d))
                }
            }
            for f in frequencies { buffers.append(try client.upload(f, shape: [f.count], device: d)) }
            perDevice[d] = buffers
        }
        deviceWeights = perDevice
    }

    /// The weight arguments (then the inverse frequencies) on `device`.
    func weights(on device: Int) throws(PJRTError) -> [PJRTBuffer] {
        guard let w = deviceWeights[device] else { throw PJRTError(code: -1, message: "the model's weights are not on device \(device)") }
        return w
    }

    /// The executable for `key`, lowering and compiling it on first use.
    func program(_ key: String, _ lower: (ModelLowering) -> String) throws(PJRTError) -> PJRTExecutable {
        if let e = programs.withLock({ $0[key] }) { return e }
        let e = try client.compile(lower(lowering))
        programs.withLock { $0[key] = e }
        return e
    }

    /// The logits at the prompt's last real position (`trueLength` of the padded `tokens`) and its keys
    /// and values ([layers, padded length, kvDim] each, on device).
    public func prefill(_ tokens: [Int32], trueLength: Int? = nil, device: Int = 0) throws(PJRTError) -> (logits: [Float], keys: PJRTBuffer, values: PJRTBuffer) {
        let length = trueLength ?? tokens.count
        guard length >= 1 && length <= tokens.count else { throw PJRTError(code: -1, message: "prefill: true length \(length) of \(tokens.count) tokens") }
        let exe = try program("prefill \(tokens.count)") { $0.prefill(length: tokens.count) }
        let out = try exe.execute(try weights(on: device) + [client.upload(tokens, shape: [tokens.count], device: device),
                                                             client.upload([Int32(length)], shape: [], device: device)], device: device)
        guard out.count == 3 else { throw PJRTError(code: -1, message: "prefill returned \(out.count) outputs, expected 3") }
        return (try out[0].download(as: Float.self), out[1], out[2])
    }
}
