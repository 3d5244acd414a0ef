/// A model on a PJRT device: weights uploaded once (f32), programs compiled from `ModelLowering` on
/// first use per shape (the client caches them by text).
public final class PJRTModel: @unchecked Sendable {
    public let config: ModelConfig
    public let client: PJRTClient
    let lowering: ModelLowering
    private let weights: [PJRTBuffer]
    private let inverseFrequencies: [PJRTBuffer]

    public init(_ checkpoint: Checkpoint, client: PJRTClient) throws {
        let w = try ModelWeights(checkpoint)
        config = checkpoint.config
        self.client = client
        lowering = ModelLowering(w)
        weights = try ModelLowering.weightArrays(w, lowering).map { values, shape throws(PJRTError) in try client.upload(values, shape: shape) }
        inverseFrequencies = try lowering.inverseFrequencies(frequencyFactors: w.ropeFrequencyFactors?.floats()).map { f throws(PJRTError) in
            try client.upload(f, shape: [f.count])
        }
    }

    /// The prompt's last-position logits and its keys and values ([layers, length, kvDim] each, on device).
    public func prefill(_ tokens: [Int32]) throws(PJRTError) -> (logits: [Float], keys: PJRTBuffer, values: PJRTBuffer) {
        guard !tokens.isEmpty else { throw PJRTError(code: -1, message: "prefill: empty prompt") }
        let exe = try client.compile(lowering.prefill(length: tokens.count))
        let out = try exe.execute(weights + inverseFrequencies + [client.upload(tokens, shape: [tokens.count])])
        guard out.count == 3 else { throw PJRTError(code: -1, message: "prefill returned \(out.count) outputs, expected 3") }
        return (try out[0].download(as: Float.self), out[1], out[2])
    }
}
