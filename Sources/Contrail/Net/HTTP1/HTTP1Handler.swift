import CShims

/// HTTP/1.1 on a connection: requests are answered one at a time and in order (pipelined requests wait
/// in the parser's buffer), with keep-alive, chunked streaming, `Expect: 100-continue`, HEAD, and the
/// `Upgrade: h2c` switch.
final class HTTP1Handler: ProtocolHandler {
    /// The connection owns this handler and outlives it (closed connections live to the end of the loop round).
    unowned(unsafe) let connection: Connection
    private var parser: HTTP1Parser
    private var queue: [HTTP1ParseEvent] = []
    private var active: HTTP1Exchange?
    private var draining = false
    private var headStartedAt: UInt64?

    init(connection: Connection) {
        self.connection = connection
        parser = HTTP1Parser(limits: connection.server.config.limits)
    }

    var isIdle: Bool { active == nil && queue.isEmpty && parser.isIdle }

    /// Stop reading while a response is streaming and enough requests are already waiting.
    var wantsInput: Bool { !parser.hasFailed && parser.bufferedBytes < 64 * 1024 && queue.count < 16 }

    func receive(_ bytes: UnsafeRawBufferPointer) {
        if headStartedAt == nil { headStartedAt = connection.loop.now }
        let events = parser.feed(bytes)
        if parser.isIdle { headStartedAt = nil }
        queue.append(contentsOf: events)
        processQueue()
    }

    private var processing = false

    private func processQueue() {
        // A handler that answers inline finishes its exchange inside `dispatch`; the loop below then
        // moves on, instead of recursing once per pipelined request.
        guard !processing else { return }
        processing = true
        defer { processing = false }
        while active == nil, !queue.isEmpty, !connection.isClosing {
            let event = queue.removeFirst()
            switch event {
            case .continueNeeded:
                connection.send(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8))
            case .error(let status, let message):
                sendError(status: status, message: message)
                return
            case .request(let head, let body):
                if parser.isIdle { headStartedAt = nil }
                if head.upgradeH2C && !connection.isTLS, let settings = head.headers["http2-settings"] {
                    upgradeToH2C(head, settings: settings)
                    return
                }
                dispatch(head, body: body)
            }
        }
    }

    private func dispatch(_ head: HTTP1RequestHead, body: [UInt8]) {
        let (path, query) = HTTPRequest.splitTarget(head.target)
        let request = HTTPRequest(method: head.method, path: path, query: query, headers: head.headers, body: body,
                                  version: head.version, isTLS: connection.isTLS)
        let keepAlive = head.keepAlive && !draining
        let exchange = HTTP1Exchange(handler: self, version: head.version, isHead: head.method == "HEAD", keepAlive: keepAlive)
        active = exchange
        let writer = ResponseWriter(loop: connection.loop, sink: exchange, highWaterMark: connection.server.config.responseBufferBytes)
        exchange.writer = writer
        connection.activeWriter = writer
        connection.server.responder.respond(to: request, writer: writer)
    }

    /// Called by the exchange once its response is fully queued.
    func exchangeFinished(_ exchange: HTTP1Exchange) {
        guard active === exchange else { return }
        active = nil
        connection.activeWriter = nil
        exchange.writer?.detach()
        exchange.writer = nil
        if !exchange.keepAlive || draining && queue.isEmpty {
            connection.closeAfterFlush()
            return
        }
        if !processing {
            processQueue()
            connection.updateInterest()
        }
    }

    private func sendError(status: Int, message: String) {
        let body = Array(JSON.object([("detail", .string(message))]).serialized.utf8)
        var head = "HTTP/1.1 \(status) \(HTTPStatus.reason(status))\r\n"
        head += "content-type: application/json\r\ncontent-length: \(body.count)\r\nconnection: close\r\n\r\n"
        connection.send(Array(head.utf8) + body)
        connection.closeAfterFlush()
    }

    // MARK: h2c upgrade (RFC 7540 §3.2)

    private func upgradeToH2C(_ head: HTTP1RequestHead, settings: String) {
        connection.send(Array("HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n".utf8))
        let h2 = HTTP2Handler(connection: connection)
        let (path, query) = HTTPRequest.splitTarget(head.target)
        let request = HTTPRequest(method: head.method, path: path, query: query, headers: head.headers, body: [],
                                  version: .http2, isTLS: false)
        guard h2.acceptUpgrade(settings: settings, request: request) else {
            connection.close()
            return
        }
        connection.adopt(h2)
        // Whatever the client sent after the upgrade request (its connection preface) belongs to HTTP/2.
        let rest = parser.takeBuffered()
        rest.withUnsafeBytes { h2.receive($0) }
    }

    // MARK: lifecycle

    func connectionClosed() {
        if let a = active {
            a.closed = true
            a.writer?.cancel()
            a.writer?.detach()
            a.writer = nil
        }
        active = nil
        connection.activeWriter = nil
        queue.removeAll()
    }

    func beginGracefulShutdown() {
        draining = true
        active?.keepAlive = false
    }

    func tick(now: UInt64) {
        if let started = headStartedAt, active == nil, !parser.isIdle,
           Double(now - started) / 1e9 > connection.server.config.headerTimeout {
            headStartedAt = nil
            sendError(status: 408, message: "request header timeout")
        }
    }
}

/// One request/response on an HTTP/1.1 connection: serializes the handler's response.
final class HTTP1Exchange: ResponseSink {
    /// Valid while `closed` is false: the handler marks its exchange closed before it can go away.
    unowned(unsafe) let handler: HTTP1Handler
    var closed = false
    let version: HTTPVersion
    let isHead: Bool
    var keepAlive: Bool
    var writer: ResponseWriter?
    private var chunked = false
    private var done = false

    init(handler: HTTP1Handler, version: HTTPVersion, isHead: Bool, keepAlive: Bool) {
        self.handler = handler
        self.version = version
        self.isHead = isHead
        self.keepAlive = keepAlive
    }

    private var connection: Connection { handler.connection }

    func sendComplete(status: Int, headers: HTTPHeaders, body: [UInt8]) {
        guard !done && !closed else { return }
        var head = headBytes(status: status, headers: headers, contentLength: body.count)
        if !isHead { head += body }
        connection.send(head)
        end()
    }

    func sendHead(status: Int, headers: HTTPHeaders, endStream: Bool) {
        guard !done && !closed else { return }
        sendHead(status: status, headers: headers, contentLength: endStream ? 0 : nil)
        if endStream { end() }
    }

    /// `contentLength` nil means a streamed body of unknown length.
    private func sendHead(status: Int, headers: HTTPHeaders, contentLength: Int?) {
        connection.send(headBytes(status: status, headers: headers, contentLength: contentLength))
    }

    private func headBytes(status: Int, headers: HTTPHeaders, contentLength: Int?) -> [UInt8] {
        var h: [UInt8] = []
        h.reserveCapacity(160)
        h += HTTP1Exchange.statusLine(status)
        var hasLength = false
        for (name, value) in headers {
            if name == "connection" || name == "transfer-encoding" || name == "keep-alive" { continue }
            if name == "content-length" { hasLength = true }
            h += name.utf8
            h += HTTP1Exchange.colonSpace
            h += value.utf8
            h += HTTP1Exchange.crlf
        }
        if !hasLength {
            if let n = contentLength {
                h += HTTP1Exchange.contentLengthPrefix
                h += String(n).utf8
                h += HTTP1Exchange.crlf
            } else if version == .http1_1 {
                chunked = true
                h += Array("transfer-encoding: chunked\r\n".utf8)
            } else {
                // HTTP/1.0 has no chunked coding: the body ends when the connection closes.
                keepAlive = false
            }
        }
        if !keepAlive {
            h += Array("connection: close\r\n".utf8)
        } else if version == .http1_0 {
            h += Array("connection: keep-alive\r\n".utf8)
        }
        h += HTTP1Exchange.crlf
        return h
    }

    static let crlf: [UInt8] = [0x0D, 0x0A]
    static let colonSpace: [UInt8] = [0x3A, 0x20]
    static let contentLengthPrefix = Array("content-length: ".utf8)
    /// "HTTP/1.1 200 OK\r\n" for the common statuses, built once.
    static let statusLines: [Int: [UInt8]] = Dictionary(uniqueKeysWithValues: [100, 101, 200, 201, 204, 400, 401, 403, 404, 405, 408, 411, 413, 414, 415, 422, 429, 431, 500, 501, 503, 504, 505].map {
        ($0, Array("HTTP/1.1 \($0) \(HTTPStatus.reason($0))\r\n".utf8))
    })

    static func statusLine(_ status: Int) -> [UInt8] {
        statusLines[status] ?? Array("HTTP/1.1 \(status) \(HTTPStatus.reason(status))\r\n".utf8)
    }

    func sendData(_ bytes: [UInt8], endStream: Bool) {
        guard !done && !closed else { return }
        if isHead {
            if endStream { end() }
            return
        }
        if chunked {
            if !bytes.isEmpty {
                var frame = Array((String(bytes.count, radix: 16) + "\r\n").utf8)
                frame += bytes
                frame += [0x0D, 0x0A]
                if endStream { frame += Array("0\r\n\r\n".utf8) }
                connection.send(frame)
            } else if endStream {
                connection.send(Array("0\r\n\r\n".utf8))
            }
        } else if !bytes.isEmpty {
            connection.send(bytes)
        }
        if endStream { end() }
    }

    func sendTrailers(_ trailers: HTTPHeaders) {
        // HTTP/1.1 clients rarely accept trailers; the body simply ends.
        sendData([], endStream: true)
    }

    private func end() {
        done = true
        handler.exchangeFinished(self)
    }
}
