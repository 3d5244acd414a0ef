#if canImport(Glibc)
import Glibc
#endif

/// What a protocol stream does with a handler's response; implemented per protocol (an HTTP/1.1 exchange,
/// an HTTP/2 stream) and called only on the connection's loop thread.
protocol ResponseSink: AnyObject {
    func sendComplete(status: Int, headers: HTTPHeaders, body: [UInt8])
    func sendHead(status: Int, headers: HTTPHeaders, endStream: Bool)
    func sendData(_ bytes: [UInt8], endStream: Bool)
    func sendTrailers(_ trailers: HTTPHeaders)
}

/// Answers one request. Any thread may call it; operations reach the connection in order. A handler
/// either calls `respond` once, or `start`, then `write` any number of times, then `finish`.
/// Cancellation (client disconnect, RST_STREAM, gRPC cancel) arrives as one signal: `isCancelled`
/// turns true and `onCancel` handlers run once.
public final class ResponseWriter: @unchecked Sendable {
    private let loop: EventLoop
    /// The protocol stream answering this request. Touched only on the loop thread; the stream drops it
    /// (`detach`) when it ends, which also breaks the writer ↔ stream cycle.
    nonisolated(unsafe) private var sink: (any ResponseSink)?
    // A plain pthread mutex (ThreadSanitizer understands it; it does not see Synchronization.Mutex's
    // futex), at a stable address.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    nonisolated(unsafe) private var _state = State()
    /// Bytes written but not yet handed to the socket beyond which `write` reports back-pressure.
    public let highWaterMark: Int

    private struct State: Sendable {
        var started = false
        var finished = false
        var cancelled = false
        var buffered = 0
        var cancelHandlers: [@Sendable () -> Void] = []
    }

    init(loop: EventLoop, sink: any ResponseSink, highWaterMark: Int = 1 << 20) {
        self.loop = loop
        self.sink = sink
        self.highWaterMark = highWaterMark
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    private var state: StateAccess { StateAccess(writer: self) }

    /// `state.withLock { … }` over the inline mutex.
    private struct StateAccess {
        let writer: ResponseWriter
        @inline(__always)
        func withLock<R>(_ body: (inout State) -> R) -> R {
            pthread_mutex_lock(writer.mutex)
            defer { pthread_mutex_unlock(writer.mutex) }
            return body(&writer._state)
        }
    }

    public var isCancelled: Bool { state.withLock { $0.cancelled } }
    public var isFinished: Bool { state.withLock { $0.finished } }
    /// Bytes written that the connection has not yet sent.
    public var bufferedBytes: Int { state.withLock { $0.buffered } }

    /// A complete response.
    public func respond(status: Int, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        guard begin(finishing: true) else { return }
        let n = body.count
        state.withLock { $0.buffered += n }
        perform { $0.sendComplete(status: status, headers: headers, body: body) }
    }

    public func respond(status: Int, headers: HTTPHeaders = [:], json: JSON) {
        var h = headers
        if !h.contains("content-type") { h.add("content-type", "application/json") }
        respond(status: status, headers: h, body: Array(json.serialized.utf8))
    }

    /// Starts a streamed response.
    public func start(status: Int, headers: HTTPHeaders = [:]) {
        guard begin(finishing: false) else { return }
        perform { $0.sendHead(status: status, headers: headers, endStream: false) }
    }

    /// Sends part of a streamed body. Returns false when the client is gone or has not read the last
    /// `highWaterMark` bytes: a producer should slow down, or give up on this client.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        let ok = state.withLock { s -> Bool in
            guard s.started && !s.finished && !s.cancelled else { return false }
            s.buffered += bytes.count
            return true
        }
        guard ok else { return false }
        if !bytes.isEmpty { perform { $0.sendData(bytes, endStream: false) } }
        return state.withLock { $0.buffered <= highWaterMark }
    }

    /// Ends a streamed response, with trailers when given (HTTP/2; dropped on HTTP/1.1).
    public func finish(trailers: HTTPHeaders? = nil) {
        let ok = state.withLock { s -> Bool in
            guard s.started && !s.finished else { return false }
            s.finished = true
            return true
        }
        guard ok else { return }
        perform { sink in
            if let trailers { sink.sendTrailers(trailers) } else { sink.sendData([], endStream: true) }
        }
    }

    /// Runs `handler` once when the request is cancelled (at once if it already is).
    public func onCancel(_ handler: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.cancelled { return true }
            s.cancelHandlers.append(handler)
            return false
        }
        if now { handler() }
    }

    private func begin(finishing: Bool) -> Bool {
        state.withLock { s in
            guard !s.started && !s.cancelled else { return false }
            s.started = true
            s.finished = finishing
            return true
        }
    }

    /// Runs `op` on the stream: at once when already on its loop thread (a handler answering inline),
    /// otherwise queued to the loop in call order.
    private func perform(_ op: @escaping (any ResponseSink) -> Void) {
        if loop.inLoop {
            if let sink { op(sink) }
            return
        }
        loop.execute { [self] in
            guard let sink = self.sink else { return }
            op(sink)
        }
    }

    /// The stream is finished or gone: later operations are dropped (loop thread).
    func detach() { sink = nil }

    // MARK: called by the connection (loop thread)

    /// The client went away or reset the stream.
    func cancel() {
        let handlers = state.withLock { s -> [@Sendable () -> Void] in
            guard !s.cancelled else { return [] }
            s.cancelled = true
            let h = s.cancelHandlers
            s.cancelHandlers = []
            return h
        }
        for h in handlers { h() }
    }

    /// `n` bytes of body left the connection's buffers.
    func drained(_ n: Int) {
        state.withLock { $0.buffered = max(0, $0.buffered - n) }
    }
}

/// The single entry point every protocol calls: a request in, a response out through the writer.
public protocol HTTPResponder: Sendable {
    func respond(to request: HTTPRequest, writer: ResponseWriter)
}
