import CNGHTTP2
import CShims

/// HTTP/2 on a connection through an nghttp2 server session. Ownership follows nghttp2's libevent
/// server example: the handler owns the session and its streams; nghttp2 calls back into the handler
/// (user_data) and into streams by id. Response bodies are pulled by nghttp2 through a data provider
/// that defers when the producer has nothing yet and is resumed when it writes.
final class HTTP2Handler: ProtocolHandler {
    /// The connection owns this handler and outlives it (closed connections live to the end of the loop round).
    unowned(unsafe) let connection: Connection
    private var session: OpaquePointer?
    private var streams: [Int32: HTTP2Stream] = [:]
    private var draining = false
    private var sending = false
    /// Set once the connection is gone: nghttp2_session_del still calls back (stream closes) and those
    /// calls must not reach the connection.
    private var gone = false
    private var nv = NVBuilder()
    /// Stop serializing frames while this much output waits for the socket (client not reading).
    static let outputHighWater = 1 << 20

    // Numeric values from nghttp2.h (its enums import as distinct types).
    static let frameData: UInt8 = 0x00, frameHeaders: UInt8 = 0x01
    static let flagEndStream: UInt8 = 0x01
    static let errDeferred = -508, errTemporalCallbackFailure: Int32 = -521
    static let dataFlagEOF: UInt32 = 0x01, dataFlagNoEndStream: UInt32 = 0x02
    static let internalError: UInt32 = 0x2, refusedStream: UInt32 = 0x7, cancel: UInt32 = 0x8

    init(connection: Connection) {
        self.connection = connection
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, user in
            HTTP2Handler.with(user) { $0.beginHeaders(frame!.pointee.hd.stream_id) }
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, namelen, value, valuelen, _, user in
            HTTP2Handler.with(user) { $0.header(frame!.pointee.hd.stream_id, name!, namelen, value!, valuelen) }
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, user in
            let hd = frame!.pointee.hd
            return HTTP2Handler.with(user) { $0.frameReceived(stream: hd.stream_id, type: hd.type, flags: hd.flags) }
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, stream, data, len, user in
            HTTP2Handler.with(user) { $0.dataChunk(stream, UnsafeRawBufferPointer(start: data, count: len)) }
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, stream, error, user in
            HTTP2Handler.with(user) { $0.streamClosed(stream, error: error) }
        }
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        // Peer-advertised header table sizes are honoured; our own header list limit is enforced per field.
        nghttp2_option_set_max_deflate_dynamic_table_size(option, 4096)
        nghttp2_session_server_new2(&session, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
        let config = connection.server.config
        var settings = [
            nghttp2_settings_entry(settings_id: 0x03, value: UInt32(config.maxConcurrentStreams)),  // MAX_CONCURRENT_STREAMS
            nghttp2_settings_entry(settings_id: 0x06, value: UInt32(config.limits.maxHeaderBytes)),  // MAX_HEADER_LIST_SIZE
            nghttp2_settings_entry(settings_id: 0x04, value: 1 << 20),  // INITIAL_WINDOW_SIZE
        ]
        nghttp2_submit_settings(session, 0, &settings, settings.count)
    }

    deinit {
        gone = true
        if let session { nghttp2_session_del(session) }
    }

    /// The handler behind nghttp2's user_data, without retain/release per callback (the session is
    /// owned by the handler, so the handler outlives every callback).
    @inline(__always)
    static func with<R>(_ user: UnsafeMutableRawPointer?, _ body: (HTTP2Handler) -> R) -> R {
        Unmanaged<HTTP2Handler>.fromOpaque(user!)._withUnsafeGuaranteedRef(body)
    }

    var isIdle: Bool { streams.isEmpty }
    var wantsInput: Bool { connection.pendingOutput < Self.outputHighWater }

    // MARK: input

    func receive(_ bytes: UnsafeRawBufferPointer) {
        guard let session, bytes.count > 0 else { return }
        let n = nghttp2_session_mem_recv(session, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count)
        if n < 0 {
            // Protocol errors: nghttp2 has queued GOAWAY; send it and close.
            flushSession()
            connection.closeAfterFlush()
            return
        }
        flushSession()
    }

    /// Asks the connection to serialize frames at the end of this loop iteration.
    func flushSession() { connection.scheduleFlush() }

    func prepareOutput() { serializeFrames() }

    /// Serializes pending frames into the connection's output.
    private func serializeFrames() {
        guard let session, !sending, !connection.closed else { return }
        sending = true
        defer { sending = false }
        while connection.pendingOutput < Self.outputHighWater {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n <= 0 { break }
            connection.appendOutput(UnsafeRawBufferPointer(start: data, count: n))
        }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            connection.closeAfterFlush()
        }
    }

    // MARK: nghttp2 callbacks

    private func beginHeaders(_ id: Int32) -> Int32 {
        guard stream(id) == nil else { return 0 }
        let s = HTTP2Stream(id: id, handler: self)
        streams[id] = s
        nghttp2_session_set_stream_user_data(session, id, Unmanaged.passUnretained(s).toOpaque())
        return 0
    }

    /// A stream by id through nghttp2's per-stream pointer (no hashing on the hot path); `streams` owns it.
    @inline(__always)
    private func stream(_ id: Int32) -> HTTP2Stream? {
        guard let session, let p = nghttp2_session_get_stream_user_data(session, id) else { return nil }
        return Unmanaged<HTTP2Stream>.fromOpaque(p).takeUnretainedValue()
    }

    private func header(_ id: Int32, _ name: UnsafePointer<UInt8>, _ nameLength: Int, _ value: UnsafePointer<UInt8>,
                        _ valueLength: Int) -> Int32 {
        guard let s = stream(id) else { return 0 }
        s.headerBytes += nameLength + valueLength + 32
        if s.headerBytes > connection.server.config.limits.maxHeaderBytes {
            return Self.errTemporalCallbackFailure  // resets just this stream
        }
        let v = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
        if name[0] == 0x3A {  // pseudo-header; nghttp2 has validated which
            switch (nameLength, name[1]) {
            case (7, 0x6D): s.method = v       // :method
            case (5, 0x70): s.path = v         // :path
            case (10, 0x61): s.headers.fields.append((name: "host", value: v))  // :authority
            default: break                     // :scheme, :protocol
            }
            return 0
        }
        // nghttp2 rejects uppercase names, so no lowercasing is needed.
        s.headers.fields.append((name: String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self), value: v))
        return 0
    }

    private func frameReceived(stream id: Int32, type: UInt8, flags: UInt8) -> Int32 {
        guard type == Self.frameHeaders || type == Self.frameData, flags & Self.flagEndStream != 0, let s = stream(id) else { return 0 }
        dispatch(s)
        return 0
    }

    private func dataChunk(_ id: Int32, _ data: UnsafeRawBufferPointer) -> Int32 {
        guard let s = stream(id), !s.dispatched else { return 0 }
        if s.body.count + data.count > connection.server.config.limits.maxBodyBytes {
            s.rejected = true
            nghttp2_submit_rst_stream(session, 0, id, Self.refusedStream)
            return 0
        }
        s.body.append(contentsOf: data)
        return 0
    }

    private func streamClosed(_ id: Int32, error: UInt32) -> Int32 {
        if gone { return 0 }
        if let s = streams.removeValue(forKey: id) {
            // Closed before the response finished: the client reset it or went away.
            if !s.responseDone { s.writer?.cancel() }
            s.closed = true
            s.writer?.detach()
            s.writer = nil
        }
        if draining && streams.isEmpty { connection.closeAfterFlush() }
        return 0
    }

    private func dispatch(_ s: HTTP2Stream) {
        guard !s.dispatched, !s.rejected else { return }
        s.dispatched = true
        let (path, query) = HTTPRequest.splitTarget(s.path)
        let request = HTTPRequest(method: s.method, path: path, query: query, headers: s.headers, body: s.body,
                                  version: .http2, isTLS: connection.isTLS)
        s.body = []
        let writer = ResponseWriter(loop: connection.loop, sink: s, highWaterMark: connection.server.config.responseBufferBytes)
        s.writer = writer
        connection.server.responder.respond(to: request, writer: writer)
    }

    // MARK: responses (called by streams, loop thread)

    fileprivate func submitResponse(_ s: HTTP2Stream, status: Int, headers: HTTPHeaders, withBody: Bool) {
        guard let session, !s.closed else { return }
        nv.build(status: status, headers, skip: Self.connectionSpecific) { nva in
            if withBody {
                var provider = nghttp2_data_provider()
                provider.source.ptr = nil
                provider.read_callback = { session, id, buf, length, flags, _, user in
                    HTTP2Handler.with(user) { $0.readBody(id, buf!, length, flags!) }
                }
                _ = nghttp2_submit_response(session, s.id, nva.baseAddress, nva.count, &provider)
            } else {
                _ = nghttp2_submit_response(session, s.id, nva.baseAddress, nva.count, nil)
            }
        }
        flushSession()
    }

    fileprivate func resume(_ s: HTTP2Stream) {
        guard let session, !s.closed else { return }
        if s.deferred {
            s.deferred = false
            nghttp2_session_resume_data(session, s.id)
        }
        flushSession()
    }

    private func readBody(_ id: Int32, _ buf: UnsafeMutablePointer<UInt8>, _ length: Int, _ flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let s = stream(id) else { return Self.errDeferred }
        let n = s.take(into: buf, max: length)
        if n > 0 { s.writer?.drained(n) }
        if s.pendingBytes == 0 && s.ended {
            flags.pointee |= Self.dataFlagEOF
            if let trailers = s.trailers {
                flags.pointee |= Self.dataFlagNoEndStream
                nv.build(status: nil, trailers) { nva in _ = nghttp2_submit_trailer(session, id, nva.baseAddress, nva.count) }
            }
            s.responseDone = true
            return n
        }
        if n == 0 {
            s.deferred = true
            return Self.errDeferred
        }
        return n
    }

    static let connectionSpecific: Set<String> = ["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"]

    // MARK: h2c upgrade

    /// Takes over from HTTP/1.1 after `101 Switching Protocols`: the upgrade request becomes stream 1.
    func acceptUpgrade(settings: String, request: HTTPRequest) -> Bool {
        guard let payload = Base64.decodeURL(settings) else { return false }
        let rc = payload.withUnsafeBufferPointer {
            nghttp2_session_upgrade2(session, $0.baseAddress, $0.count, request.method == "HEAD" ? 1 : 0, nil)
        }
        guard rc == 0 else { return false }
        let s = HTTP2Stream(id: 1, handler: self)
        s.method = request.method
        s.path = request.path + (request.query.map { "?" + $0 } ?? "")
        s.headers = request.headers
        streams[1] = s
        nghttp2_session_set_stream_user_data(session, 1, Unmanaged.passUnretained(s).toOpaque())
        dispatch(s)
        return true
    }

    // MARK: lifecycle

    func connectionClosed() {
        guard !gone else { return }
        gone = true
        for s in streams.values where !s.responseDone { s.writer?.cancel() }
        for s in streams.values {
            s.closed = true
            s.writer?.detach()
            s.writer = nil
        }
        streams.removeAll()
        if let session { nghttp2_session_del(session) }
        session = nil
    }

    func beginGracefulShutdown() {
        guard !draining, let session else { return }
        draining = true
        nghttp2_submit_goaway(session, 0, nghttp2_session_get_last_proc_stream_id(session), 0, nil, 0)
        flushSession()
        if streams.isEmpty { connection.closeAfterFlush() }
    }

    func outputDrained() { serializeFrames(); connection.flushIfPending() }

    func tick(now: UInt64) {}
}

/// nghttp2_nv arrays built in buffers reused across responses (nghttp2 copies names and values, so
/// the bytes need only live for the submit call).
struct NVBuilder {
    private var storage: [UInt8] = []
    private var spans: [(Int, Int, Int, Int)] = []
    private var nvs: [nghttp2_nv] = []

    init() {
        storage.reserveCapacity(512)
        spans.reserveCapacity(16)
        nvs.reserveCapacity(16)
    }

    mutating func build<R>(status: Int?, _ fields: HTTPHeaders, skip: Set<String> = [], _ body: (UnsafeMutableBufferPointer<nghttp2_nv>) -> R) -> R {
        storage.removeAll(keepingCapacity: true)
        spans.removeAll(keepingCapacity: true)
        nvs.removeAll(keepingCapacity: true)
        if let status { add(":status".utf8, String(status).utf8) }
        for (n, v) in fields where !skip.contains(n) { add(n.utf8, v.utf8) }
        return storage.withUnsafeMutableBufferPointer { raw in
            for s in spans {
                nvs.append(nghttp2_nv(name: raw.baseAddress! + s.0, value: raw.baseAddress! + s.2, namelen: s.1, valuelen: s.3, flags: 0))
            }
            return nvs.withUnsafeMutableBufferPointer { body($0) }
        }
    }

    private mutating func add(_ name: String.UTF8View, _ value: String.UTF8View) {
        let ns = storage.count
        storage.append(contentsOf: name)
        let vs = storage.count
        storage.append(contentsOf: value)
        spans.append((ns, name.count, vs, value.count))
    }
}

/// One HTTP/2 stream: the request as it arrives and the response queued for nghttp2 to pull.
final class HTTP2Stream: ResponseSink {
    let id: Int32
    /// Valid while `closed` is false: the handler marks every stream closed before it can go away.
    unowned(unsafe) let handler: HTTP2Handler
    var method = ""
    var path = ""
    var headers = HTTPHeaders()
    var body: [UInt8] = []
    var headerBytes = 0
    var dispatched = false
    var rejected = false
    var closed = false
    var writer: ResponseWriter?
    // Response state.
    private var chunks: [[UInt8]] = []
    private var offset = 0
    private(set) var pendingBytes = 0
    var ended = false
    var trailers: HTTPHeaders?
    var deferred = false
    var responseDone = false

    init(id: Int32, handler: HTTP2Handler) {
        self.id = id
        self.handler = handler
        headers.fields.reserveCapacity(8)
    }

    func sendComplete(status: Int, headers: HTTPHeaders, body: [UInt8]) {
        guard !closed else { return }
        var h = headers
        if !body.isEmpty && !h.contains("content-length") { h.add("content-length", String(body.count)) }
        if !body.isEmpty { append(body) }
        ended = true
        if body.isEmpty { responseDone = true }
        handler.submitResponse(self, status: status, headers: h, withBody: !body.isEmpty)
    }

    func sendHead(status: Int, headers: HTTPHeaders, endStream: Bool) {
        guard !closed else { return }
        if endStream {
            ended = true
            responseDone = true
        }
        handler.submitResponse(self, status: status, headers: headers, withBody: !endStream)
    }

    func sendData(_ bytes: [UInt8], endStream: Bool) {
        guard !ended && !closed else { return }
        if !bytes.isEmpty { append(bytes) }
        if endStream { ended = true }
        handler.resume(self)
    }

    func sendTrailers(_ trailers: HTTPHeaders) {
        guard !ended && !closed else { return }
        self.trailers = trailers
        ended = true
        handler.resume(self)
    }

    private func append(_ bytes: [UInt8]) {
        chunks.append(bytes)
        pendingBytes += bytes.count
    }

    /// Copies up to `max` queued bytes into nghttp2's buffer.
    func take(into buf: UnsafeMutablePointer<UInt8>, max: Int) -> Int {
        var n = 0
        while n < max, !chunks.isEmpty {
            let c = chunks[0]
            let k = min(max - n, c.count - offset)
            c.withUnsafeBufferPointer { (buf + n).update(from: $0.baseAddress! + offset, count: k) }
            n += k
            offset += k
            if offset == c.count {
                chunks.removeFirst()
                offset = 0
            }
        }
        pendingBytes -= n
        return n
    }
}

extension Base64 {
    /// base64url without padding (HTTP2-Settings).
    static func decodeURL(_ s: String) -> [UInt8]? {
        let std = s.utf8.map { c -> UInt8 in c == UInt8(ascii: "-") ? UInt8(ascii: "+") : c == UInt8(ascii: "_") ? UInt8(ascii: "/") : c }
        return decode(std)
    }
}
