/// JetStream's engine API: prefill a prompt into a `Prefix`, insert it into a decode slot, then step all
/// live slots together with `generate`. Both backends (CPU, PJRT) implement it from the same
/// `ModelConfig`/`Checkpoint`, so the serving pipeline never knows which one runs.
public protocol Engine: AnyObject {
    var config: ModelConfig { get }
    /// Concurrent decodes (slots).
    var slotCount: Int { get }
    var maxPrefillLength: Int { get }
    /// Prompt plus generated tokens per slot.
    var maxCacheLength: Int { get }

    /// Shape-specialising backends (PJRT) compile one program per prefill length, so the serving layer
    /// pads prompts to length buckets and warms every bucket; the CPU backend runs any length as is.
    var compilesPerShape: Bool { get }

    /// Runs the first `trueLength` tokens of `tokens` (the rest is padding up to a length bucket) and
    /// samples the first generated token.
    func prefill(_ tokens: [Int32], trueLength: Int, sampling: SamplingParams) throws -> Prefix
    /// Moves a prefix to where decoding runs (called on the transfer thread; disaggregated backends copy
    /// it between devices here, others return it as is).
    func transfer(_ prefix: Prefix) throws -> Prefix
    /// Places a prefix into a free slot; generation continues from its first token.
    func insert(_ prefix: Prefix, slot: Int) throws
    /// One decode step over every live slot: the next token of each.
    func generate() throws -> [SlotToken]
    func free(slot: Int)
    /// Warm-up: prepares what the first requests would otherwise wait for (PJRT: compiles every variant
    /// of the decode step; prefill and insert are compiled by warming each bucket).
    func prepare() throws
}

extension Engine {
    public func transfer(_ prefix: Prefix) throws -> Prefix { prefix }
    public func prepare() throws {}

    /// A prompt without padding.
    public func prefill(_ tokens: [Int32], sampling: SamplingParams) throws -> Prefix {
        try prefill(tokens, trueLength: tokens.count, sampling: sampling)
    }
}

/// How decode caches keep keys and values: f32, bf16 (half), or int8 with one f32 scale per token and layer
/// over all KV heads (a quarter; jetstream-pytorch's `--quantize_kv_cache`). Prefill computes in f32 and
/// the prefix is converted as it is inserted into a slot, on both backends.
public enum KVCacheStorage: String, Sendable, CaseIterable {
    case f32, bf16, int8
}

/// What the CPU backend's matrix products read: the f32 activations (exact to the f32 reference); the
/// activations quantized to int8 per 32 values with integer dot products against the quantized weight
/// blocks (llama.cpp's scheme: fastest, logits within a unit or two of the f32 ones); or int8x2, the same
/// products on two int8 parts, the rounded activations and what rounding left out (~16 bits: logits within
/// a few hundredths, at nearly int8's decode speed since decode waits on memory). Weight types without
/// integer kernels (f32, f16, bf16, …) read f32 activations in every mode.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    case f32, int8, int8x2
}

/// A prefilled prompt: its KV cache (backend-specific storage), length and first sampled token.
public final class Prefix: @unchecked Sendable {
    public let length: Int
    public let firstToken: Int32
    public let firstLogits: [Float]
    /// The first token's log-probabilities, when the sampling asks for them.
    public var firstLogprobs: TokenLogprobs? { sampler.lastLogprobs }
    let sampler: Sampler
    /// Per layer: keys and values, `length` × kvDim each (CPU backend).
    let keys: [[Float]]
    let values: [[Float]]
    /// The backend's own storage of the prefix (PJRT: device buffers), when not host arrays.
    let device: AnyObject?

    init(length: Int, firstToken: Int32, firstLogits: [Float], sampler: Sampler, keys: [[Float]] = [], values: [[Float]] = [],
         device: AnyObject? = nil) {
        self.length = length
        self.firstToken = firstToken
        self.firstLogits = firstLogits
        self.sampler = sampler
        self.keys = keys
        self.values = values
        self.device = device
    }
}

public struct SlotToken: Sendable, Equatable {
    public let slot: Int
    public let token: Int32
    /// When the slot's sampling asks for them.
    public var logprobs: TokenLogprobs? = nil
}

public enum EngineError: Error, CustomStringConvertible, Equatable {
    case promptTooLong(Int, max: Int)
    case emptyPrompt
    case slotBusy(Int)
    case badSlot(Int)
    case cacheFull(slot: Int)
    case tokenOutOfRange(Int32, vocab: Int)
    case unsupportedWeights(String)

    public var description: String {
        switch self {
        case .promptTooLong(let n, let max): return "prompt of \(n) tokens exceeds the maximum prefill length \(max)"
        case .emptyPrompt: return "empty prompt"
        case .slotBusy(let s): return "slot \(s) is in use"
        case .badSlot(let s): return "no slot \(s)"
        case .cacheFull(let s): return "slot \(s) reached the maximum cache length"
        case .tokenOutOfRange(let t, let v): return "token id \(t) is outside the vocabulary (\(v))"
        case .unsupportedWeights(let m): return m
        }
    }
}
