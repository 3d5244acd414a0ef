import CShims

/// gRPC status codes (grpc/doc/statuscodes.md).
public struct GRPCStatus: Error, Sendable, Equatable {
    public var code: Int
    public var message: String

    public init(_ code: Int, _ message: String = "") {
        self.code = code
        self.message = message
    }

    public static let ok = 0, cancelled = 1, unknown = 2, invalidArgument = 3, deadlineExceeded = 4, notFound = 5
    public static let resourceExhausted = 8, failedPrecondition = 9, unimplemented = 12, `internal` = 13
    public static let unavailable = 14, unauthenticated = 16
}

/// One gRPC call as a handler sees it: the request message, and a way to send responses and end with a status.
/// Thread-safe; a deadline (grpc-timeout) or client cancel ends the call and signals `onCancel`.
public final class GRPCCall: @unchecked Sendable {
    public let request: HTTPRequest
    public let message: [UInt8]
    let writer: ResponseWriter
    private let state = Locked((started: false, finished: false))
    private var timer: UInt64?

    init(request: HTTPRequest, message: [UInt8], writer: ResponseWriter) {
        self.request = request
        self.message = message
        self.writer = writer
    }

    public var isCancelled: Bool { writer.isCancelled || state.withLock { $0.finished } }
    public func onCancel(_ handler: @escaping @Sendable () -> Void) { writer.onCancel(handler) }
    /// Metadata (request headers), e.g. `authorization`.
    public func metadata(_ name: String) -> String? { request.headers[name] }

    /// Sends one response message (length-prefixed). Returns false when the call is over or the client
    /// has fallen `ResponseWriter.highWaterMark` bytes behind.
    @discardableResult
    public func send(_ message: [UInt8]) -> Bool {
        let start = state.withLock { s -> Bool? in
            if s.finished { return nil }
            defer { s.started = true }
            return !s.started
        }
        guard let start else { return false }
        if start { writer.start(status: 200, headers: ["content-type": "application/grpc"]) }
        return writer.write(grpcFramed(message))
    }

    /// Ends the call with `status` (trailers, or a Trailers-Only response when nothing was sent).
    public func finish(_ status: GRPCStatus = GRPCStatus(GRPCStatus.ok)) {
        let started = state.withLock { s -> Bool? in
            if s.finished { return nil }
            s.finished = true
            return s.started
        }
        guard let started else { return }
        if let t = timer { TimerQueue.shared.cancel(t) }
        var trailers: HTTPHeaders = ["grpc-status": String(status.code)]
        if !status.message.isEmpty { trailers.add("grpc-message", Self.percentEncode(status.message)) }
        if started {
            writer.finish(trailers: trailers)
        } else {
            var h: HTTPHeaders = ["content-type": "application/grpc"]
            h.fields += trailers.fields
            writer.respond(status: 200, headers: h)
        }
    }

    func armDeadline(_ nanos: UInt64) {
        timer = TimerQueue.shared.schedule(at: contrail_now_ns() + nanos) { [weak self] in
            guard let self else { return }
            self.finish(GRPCStatus(GRPCStatus.deadlineExceeded, "deadline exceeded"))
            self.writer.cancel()  // the handler sees the deadline as cancellation
        }
    }

    /// grpc-message encoding: percent-encode bytes outside printable ASCII, and '%'.
    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            if b >= 0x20 && b <= 0x7E && b != 0x25 {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let hex = String(b, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}

/// gRPC over our HTTP/2: unary and server-streaming methods registered by full name
/// (`/jetstream_proto.Orchestrator/Decode`). Handlers get the single request message.
public final class GRPCServer: @unchecked Sendable {
    public typealias Handler = @Sendable (GRPCCall) -> Void
    private var methods: [String: (handler: Handler, protected: Bool)] = [:]
    public var maxMessageBytes: Int
    /// Checked on protected methods (metadata `authorization: Bearer <key>`).
    public var apiKeys = APIKeys([])

    public init(maxMessageBytes: Int = 4 * 1024 * 1024) { self.maxMessageBytes = maxMessageBytes }

    /// Registers `/service/method` (setup only, before serving).
    public func register(_ service: String, _ method: String, protected: Bool = false, _ handler: @escaping Handler) {
        methods["/\(service)/\(method)"] = (handler, protected)
    }

    func handle(_ request: HTTPRequest, writer: ResponseWriter) {
        func fail(_ code: Int, _ message: String) {
            GRPCCall(request: request, message: [], writer: writer).finish(GRPCStatus(code, message))
        }
        guard request.version == .http2 else {
            writer.respond(status: 505, json: .object([("detail", .string("gRPC requires HTTP/2"))]))
            return
        }
        guard request.method == "POST" else { return fail(GRPCStatus.unimplemented, "gRPC requires POST") }
        guard let method = methods[request.path] else {
            return fail(GRPCStatus.unimplemented, "unknown method \(request.path)")
        }
        if method.protected && !apiKeys.allows(request.headers) { return fail(GRPCStatus.unauthenticated, APIKeys.message) }
        let handler = method.handler
        if let enc = request.headers["grpc-encoding"], enc != "identity" {
            return fail(GRPCStatus.unimplemented, "message compression \(enc) is not supported")
        }
        // Exactly one length-prefixed message.
        let body = request.body
        guard body.count >= 5 else { return fail(GRPCStatus.internal, "expected one request message") }
        if body[0] != 0 {
            return fail(GRPCStatus.unimplemented, body[0] == 1 ? "compressed messages are not supported" : "invalid message flag")
        }
        let length = Int(body[1]) << 24 | Int(body[2]) << 16 | Int(body[3]) << 8 | Int(body[4])
        if length > maxMessageBytes {
            return fail(GRPCStatus.resourceExhausted, "request message of \(length) bytes exceeds the limit of \(maxMessageBytes)")
        }
        guard body.count == 5 + length else { return fail(GRPCStatus.internal, "expected exactly one request message") }
        let call = GRPCCall(request: request, message: Array(body[5...]), writer: writer)
        if let timeout = request.headers["grpc-timeout"] {
            guard let nanos = Self.parseTimeout(timeout) else { return fail(GRPCStatus.internal, "invalid grpc-timeout \(timeout)") }
            call.armDeadline(nanos)
        }
        handler(call)
    }

    /// `grpc-timeout`: 1–8 digits and a unit (H M S m u n).
    static func parseTimeout(_ s: String) -> UInt64? {
        guard let unit = s.last, s.count >= 2, s.count <= 9, let value = UInt64(s.dropLast()) else { return nil }
        switch unit {
        case "H": return value * 3_600_000_000_000
        case "M": return value * 60_000_000_000
        case "S": return value * 1_000_000_000
        case "m": return value * 1_000_000
        case "u": return value * 1_000
        case "n": return value
        default: return nil
        }
    }
}

/// A message in gRPC's length-prefixed framing (uncompressed flag, 4-byte big-endian length).
func grpcFramed(_ message: [UInt8]) -> [UInt8] {
    let n = UInt32(message.count)
    return [0, UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + message
}
