import CShims

/// What the load generator talks to and how.
public struct BenchTarget: Sendable {
    public enum API: String, Sendable, CaseIterable {
        /// `jetstream_proto.Orchestrator/Decode` with token_content, like JetStream's benchmark_serving.py.
        case grpc
        /// jetstream-http's `POST /generate` with `stream: true` (one JSON object per line).
        case http
        /// `POST /v1/completions` with `stream: true` (Server-Sent Events), as the OpenAI SDK sends it.
        case openai
    }

    public var host: String
    public var port: Int
    public var api: API
    /// The OpenAI `model` field; omitted when nil (servers with one model accept that).
    public var model: String?
    public var apiKey: String?
    /// Sampling temperature sent on the OpenAI route (0: greedy, the same work on every server).
    public var temperature: Double = 0
    /// Asks OpenAI-route servers to generate the full `max_tokens` (vLLM/llama.cpp `ignore_eos`), so
    /// output lengths are those of the workload.
    public var ignoreEOS = true
    /// Bound on connecting and on each wait for bytes.
    public var timeoutMs = 300_000

    public init(host: String, port: Int, api: API) {
        self.host = host
        self.port = port
        self.api = api
    }

    /// `HOST:PORT` (an IPv6 literal in brackets).
    public static func parseAddress(_ s: String) -> (String, Int)? {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    /// Runs one request, filling `trace` as bytes arrive.
    func run(_ prompt: BenchPrompt, _ trace: inout RequestTrace) throws(BenchFailure) {
        switch api {
        case .grpc: try GRPCBenchClient(target: self).run(prompt, &trace)
        case .http, .openai: try HTTPBenchClient(target: self).run(prompt, &trace)
        }
    }
}

/// Why a request failed, by kind (the report counts them per kind).
public enum BenchFailure: Error, Sendable, Equatable, CustomStringConvertible {
    case connect(String)
    case timeout
    case closed(String)
    case httpStatus(Int, String)
    case grpcStatus(Int, String)
    case malformed(String)
    /// The server reported an error inside an otherwise successful stream.
    case streamError(String)

    public var kind: String {
        switch self {
        case .connect: "connect"
        case .timeout: "timeout"
        case .closed: "connection closed"
        case .httpStatus(let s, _): "HTTP \(s)"
        case .grpcStatus(let c, _): "gRPC status \(c)"
        case .malformed: "malformed response"
        case .streamError: "error in stream"
        }
    }

    public var description: String {
        switch self {
        case .connect(let m), .closed(let m), .malformed(let m), .streamError(let m): "\(kind): \(m)"
        case .timeout: kind
        case .httpStatus(_, let m), .grpcStatus(_, let m): m.isEmpty ? kind : "\(kind): \(m)"
        }
    }
}

/// One request as the client saw it. Times are CLOCK_MONOTONIC nanoseconds.
struct RequestTrace: Sendable {
    var start: UInt64 = 0
    var end: UInt64 = 0
    /// Arrival of each piece of output (an SSE event, an NDJSON line, a DecodeResponse).
    var chunkTimes: [UInt64] = []
    /// Tokens counted by the client: ids for gRPC, one per non-empty chunk for text streams.
    var countedTokens = 0
    /// The server's own counts (OpenAI `usage`), preferred when present.
    var reportedOutputTokens: Int?
    var reportedPromptTokens: Int?
    var failure: BenchFailure?

    var outputTokens: Int { reportedOutputTokens ?? countedTokens }

    mutating func chunk(tokens: Int, at time: UInt64) {
        chunkTimes.append(time)
        countedTokens += tokens
    }
}
