#if canImport(Glibc)
import Glibc
#endif

/// What the generation routes serve from. The server listens before the model is loaded, so the
/// orchestrator arrives later; until the state is `ready` (and again while draining) they answer 503.
public final class ModelService: Sendable {
    public let state: ServerState
    /// The name clients use (`model` in the OpenAI API, the metrics label).
    public let modelName: String
    /// When the server started (Unix seconds), for `/v1/models`.
    public let created = Int(time(nil))
    /// Sampling for APIs that carry none (JetStream's): greedy unless `contrail serve` says otherwise.
    public let defaultSampling: SamplingParams
    /// How text prompts of APIs without messages (JetStream's) reach the model.
    public let promptFormat: GenerationRequest.PromptFormat
    /// Exists from the start, so /metrics answers (load time, zero gauges) while the model loads.
    public let metrics: Metrics
    private let current = Locked<Orchestrator?>(nil)

    public init(state: ServerState, modelName: String, metrics: Metrics, defaultSampling: SamplingParams = .greedy,
                promptFormat: GenerationRequest.PromptFormat = .raw) {
        self.state = state
        self.modelName = modelName
        self.metrics = metrics
        self.defaultSampling = defaultSampling
        self.promptFormat = promptFormat
    }

    public func attach(_ orchestrator: Orchestrator) { current.withLock { $0 = orchestrator } }
    public var orchestrator: Orchestrator? { current.withLock { $0 } }

    /// The orchestrator when the server takes requests, otherwise why not.
    func ready() throws(ServingError) -> Orchestrator {
        let phase = state.current
        guard phase == .ready, let o = orchestrator else {
            throw .unavailable(phase == .draining ? "server is draining" : "server is \(phase.name); not ready yet")
        }
        return o
    }
}

/// Ties one API response to one generation: cancels the generation when the client goes away or stops
/// reading. Events arrive on the detokenize thread, one at a time.
class GenerationExchange: @unchecked Sendable {
    private let handle = Locked<RequestHandle?>(nil)

    /// Called once `submit` returned; a client already gone cancels at once.
    func attach(_ h: RequestHandle, cancelledBy writer: ResponseWriter) {
        handle.withLock { $0 = h }
        // Weak: the writer may outlive the request, and must not keep this exchange (and its text) alive.
        writer.onCancel { [weak self] in self?.cancel() }
    }

    func cancel() { handle.withLock { $0 }?.cancel() }
}

/// Response head of a Server-Sent Events stream (OpenAI and Triton streaming).
let serverSentEventsHeaders: HTTPHeaders = ["content-type": "text/event-stream", "cache-control": "no-cache"]

/// Random ids for streamed chunks (`id`), unique enough to correlate logs.
func randomRequestId() -> String {
    var g = SystemRandomNumberGenerator()
    let hex = String(g.next() as UInt64, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
