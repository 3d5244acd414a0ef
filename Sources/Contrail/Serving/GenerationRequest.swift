/// What every API turns its input into: the orchestrator knows nothing of HTTP or gRPC.
public struct GenerationRequest: Sendable {
    public enum Prompt: Sendable, Equatable {
        case text(String)
        case tokens([Int32])
    }

    /// How a text prompt becomes the model's input.
    public enum PromptFormat: String, Sendable, CaseIterable {
        /// As given (JetStream).
        case raw
        /// Wrapped in the model's chat template as one user message, ready for the assistant's reply.
        case chat
        /// `chat` for models that ship a chat template, unless the prompt already holds control tokens
        /// (it was formatted by the client); `raw` otherwise.
        case auto
    }

    public var prompt: Prompt
    public var promptFormat: PromptFormat = .raw
    /// Most tokens to generate (≥ 1). Capped by what is left of the cache after the prompt.
    public var maxTokens: Int
    public var sampling: SamplingParams
    /// True when the prompt already starts with BOS (JetStream's `has_bos`): none is added. Otherwise
    /// BOS is added when the model's tokenizer adds one, unless the token prompt already begins with it.
    public var hasBOS = false
    /// Texts that end generation where they appear (across token boundaries); never sent themselves.
    public var stopStrings: [String] = []
    /// Ids that end generation in addition to the model's EOS / end-of-turn tokens.
    public var extraStopIds: Set<Int32> = []
    /// Keep generating past the model's EOS / end-of-turn tokens until `maxTokens` (vLLM's and llama.cpp's
    /// `ignore_eos`: fixed output lengths for benchmarks). `extraStopIds` and stop strings still apply.
    public var ignoreEOS = false
    /// Report the stop token's id (JetStream does, with no text); OpenAI-style APIs leave it out.
    public var reportStopToken = true
    /// Detokenize (text prompts want text; JetStream's token_content wants ids only).
    public var wantsText = true
    /// Keep the last `maxPrefillLength` tokens of a too-long prompt instead of rejecting it.
    public var truncate = false

    public init(prompt: Prompt, maxTokens: Int, sampling: SamplingParams = .greedy) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
    }
}

/// Why a generation ended.
public enum FinishReason: String, Sendable {
    /// An EOS / end-of-turn / requested stop token.
    case stop
    /// `maxTokens`, or the cache filled.
    case length
    /// The client went away, reset the stream or cancelled.
    case cancelled
}

/// Per-request figures, reported with the last event (and to /metrics).
public struct RequestStats: Sendable {
    public var promptTokens = 0
    public var outputTokens = 0
    /// Submitted → prefill started.
    public var queueSeconds = 0.0
    public var prefillSeconds = 0.0
    /// Submitted → first token.
    public var timeToFirstToken = 0.0
    /// Submitted → finished.
    public var totalSeconds = 0.0
    /// Time neither prefilling nor decoding: queues and waiting for a slot.
    public var waitSeconds = 0.0
}

/// The stream an API reads: token events, then exactly one `finished` or `failed`.
public enum TokenEvent: Sendable {
    /// Newly generated ids and the text they completed. With `wantsText`, ids whose bytes end mid-character
    /// are held back and arrive with the id that completes the text; a reported stop token has empty text.
    /// `logprobs` has one entry per id when the sampling asks for them (else it is empty).
    case tokens([Int32], text: String, logprobs: [TokenLogprobs])
    case finished(FinishReason, RequestStats)
    case failed(ServingError)
}

/// Handed back by `Orchestrator.submit`: cancel frees the request's slot at the next decode step.
public final class RequestHandle: Sendable {
    let request: ActiveRequest
    weak let orchestrator: Orchestrator?

    init(_ request: ActiveRequest, orchestrator: Orchestrator) {
        self.request = request
        self.orchestrator = orchestrator
    }

    public var id: UInt64 { request.id }

    public func cancel() {
        guard !request.isCancelled else { return }
        request.cancel()
        orchestrator?.noteCancel()
    }
}
