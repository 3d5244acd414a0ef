/// Everything the serving layer can refuse or fail with. `API/ErrorStatus.swift` maps each to one HTTP
/// status and one gRPC code.
public enum ServingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The request itself is wrong (a field, a token id).
    case invalidRequest(String)
    case promptTooLong(tokens: Int, max: Int)
    /// The queue is full: retry later.
    case overloaded(queued: Int)
    /// Loading, warming up or draining.
    case unavailable(String)
    case unimplemented(String)
    /// The client stopped reading and its buffered output passed the bound.
    case slowClient(bufferedBytes: Int)
    /// The engine failed (a bug or a resource problem, not the request).
    case engine(String)

    public var description: String {
        switch self {
        case .invalidRequest(let m): return m
        case .promptTooLong(let n, let max):
            return "prompt is \(n) tokens, more than the maximum prefill length of \(max); shorten it or ask for truncation"
        case .overloaded(let q): return "server is overloaded (\(q) requests queued); retry later"
        case .unavailable(let m): return m
        case .unimplemented(let m): return m
        case .slowClient(let n): return "client stopped reading (\(n) bytes buffered); request cancelled"
        case .engine(let m): return "engine error: \(m)"
        }
    }
}
