import CShims

#if canImport(Glibc)
import Glibc
#endif

/// A protocol spoken on a connection once sniffing has decided which.
protocol ProtocolHandler: AnyObject {
    /// Plaintext bytes from the client.
    func receive(_ bytes: UnsafeRawBufferPointer)
    /// The client half-closed or the connection is gone: cancel whatever is in flight.
    func connectionClosed()
    /// Stop taking new requests; finish in-flight ones (GOAWAY / `Connection: close`).
    func beginGracefulShutdown()
    /// No request in flight and nothing buffered: the connection may be closed at once.
    var isIdle: Bool { get }
    /// Whether the client's next bytes are wanted now (back-pressure on pipelining / slow streams).
    var wantsInput: Bool { get }
    func tick(now: UInt64)
    /// The socket took queued output: a protocol holding back frames may produce more.
    func outputDrained()
    /// Just before the connection writes: a protocol may serialize what it has buffered (HTTP/2 frames).
    func prepareOutput()
}

extension ProtocolHandler {
    func outputDrained() {}
    func prepareOutput() {}
}

/// One accepted TCP connection, owned by one event loop: socket I/O, optional TLS, protocol sniffing,
/// output buffering and the timeouts that do not belong to a protocol.
final class Connection: EventHandler, TickHandler {
    let fd: Int32
    unowned let loop: EventLoop
    let server: ServerCore
    private(set) var handler: ProtocolHandler?
    private var sniffed: [UInt8] = []
    private var tls: OpaquePointer?
    private(set) var isTLS = false
    private var out: [UInt8] = []
    private var outStart = 0
    private var registeredEvents: UInt32 = 0
    private(set) var closed = false
    private var closeWhenFlushed = false
    private var inDrainCallback = false
    private var writeBlocked = false
    private var lastReadAt: UInt64
    private var lastWriteProgressAt: UInt64
    let acceptedAt: UInt64
    /// HTTP/1.1's response in progress, credited when its bytes leave the socket (back-pressure).
    var activeWriter: ResponseWriter?

    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let readChunk = 64 * 1024

    init(fd: Int32, loop: EventLoop, server: ServerCore) {
        self.fd = fd
        self.loop = loop
        self.server = server
        acceptedAt = loop.now
        lastReadAt = acceptedAt
        lastWriteProgressAt = acceptedAt
    }

    func start() throws {
        registeredEvents = EventLoop.readable
        try loop.register(fd, events: registeredEvents, handler: self)
        loop.addTicker(self)
    }

    // MARK: events

    func handleEvents(_ events: UInt32) {
        if events & EventLoop.writable != 0 {
            handler?.prepareOutput()
            flush()
        }
        if events & (EventLoop.readable | EventLoop.hangup | EventLoop.error) != 0 && !closed { readAvailable() }
        if events & EventLoop.error != 0 && !closed { close() }
    }

    private func readAvailable() {
        var rounds = 0
        while !closed && rounds < 8 && wantsInput {
            rounds += 1
            let buf = loop.readBuffer
            let n = read(fd, buf.baseAddress, buf.count)
            if n > 0 {
                lastReadAt = loop.now
                received(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                if n < Self.readChunk { break }
            } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                // The client closed (or the socket failed): close() cancels what is in flight.
                close()
                return
            } else {
                break
            }
        }
        updateInterest()
    }

    private var wantsInput: Bool { handler?.wantsInput ?? true }

    private func received(_ raw: UnsafeRawBufferPointer) {
        if tls != nil || (handler == nil && sniffed.isEmpty && raw.first == 0x16 && server.tlsContext != nil) {
            receiveTLS(raw)
        } else {
            receivePlain(raw)
        }
    }

    private func receiveTLS(_ raw: UnsafeRawBufferPointer) {
        if tls == nil {
            guard let ctx = server.tlsContext, let ssl = contrail_tls_session(ctx) else { close(); return }
            tls = OpaquePointer(ssl)
            isTLS = true
        }
        let ssl = UnsafeMutableRawPointer(tls!)
        _ = contrail_tls_feed(ssl, raw.baseAddress, Int32(raw.count))
        var error = [CChar](repeating: 0, count: 256)
        var plain = [UInt8](repeating: 0, count: 16 * 1024)
        while !closed {
            let n = contrail_tls_read(ssl, &plain, Int32(plain.count), &error, error.count)
            if n > 0 {
                if handler == nil { chooseTLSProtocol() }
                plain.withUnsafeBytes { receivePlain(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)])) }
            } else if n == 0 {
                if handler == nil && contrail_tls_established(ssl) == 1 { chooseTLSProtocol() }
                break
            } else {
                // Handshake failures end the connection (after any alert OpenSSL queued).
                drainTLS()
                closeAfterFlush()
                return
            }
        }
        // Handshake messages OpenSSL produced.
        drainTLS()
        if outStart < out.count { scheduleFlush() }
    }

    private func chooseTLSProtocol() {
        var name = [CChar](repeating: 0, count: 32)
        contrail_tls_alpn(UnsafeMutableRawPointer(tls!), &name, name.count)
        let alpn = name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        if alpn == "h2" { adopt(HTTP2Handler(connection: self)) }
        // Without ALPN the plaintext is sniffed like a cleartext connection.
    }

    private func receivePlain(_ bytes: UnsafeRawBufferPointer) {
        if let handler {
            handler.receive(bytes)
            return
        }
        sniffed.append(contentsOf: bytes)
        let n = min(sniffed.count, Self.preface.count)
        if sniffed.prefix(n).elementsEqual(Self.preface.prefix(n)) {
            if n < Self.preface.count { return }  // could still be the HTTP/2 preface
            adopt(HTTP2Handler(connection: self))
        } else {
            adopt(HTTP1Handler(connection: self))
        }
        let data = sniffed
        sniffed = []
        data.withUnsafeBytes { handler?.receive($0) }
    }

    /// Switches protocol (sniffing result, or an HTTP/1.1 → h2c upgrade).
    func adopt(_ h: ProtocolHandler) {
        handler = h
        if server.isShuttingDown { h.beginGracefulShutdown() }
    }

    // MARK: output

    /// Queues plaintext for the client. Nothing is written yet: the loop flushes every connection with
    /// queued output once per iteration, so the responses (and HTTP/2 frames) produced in one round
    /// leave in one write.
    func send(_ bytes: UnsafeRawBufferPointer) {
        guard !closed, bytes.count > 0 else { return }
        appendOutput(bytes)
        scheduleFlush()
    }

    func send(_ bytes: [UInt8]) { bytes.withUnsafeBytes { send($0) } }

    /// Adds bytes during `prepareOutput` (the flush that follows writes them).
    func appendOutput(_ bytes: UnsafeRawBufferPointer) {
        guard !closed else { return }
        if tls != nil { plain.append(contentsOf: bytes) } else { out.append(contentsOf: bytes) }
    }

    func flushIfPending() { if pendingOutput > 0 { flush() } }

    private var flushScheduled = false

    func scheduleFlush() {
        guard !flushScheduled, !closed else { return }
        flushScheduled = true
        loop.scheduleFlush(self)
    }

    /// Called by the loop at the end of an iteration.
    func flushScheduledOutput() {
        flushScheduled = false
        guard !closed else { return }
        handler?.prepareOutput()
        flush()
    }

    /// Bytes not yet on the socket. `out` is what goes on the wire; under TLS, plaintext waits in `plain`
    /// and is encrypted into `out` when flushing (one TLS record per batch, not per response).
    /// Closed, or closing once its output is flushed: take no more requests.
    var isClosing: Bool { closed || closeWhenFlushed }

    var pendingOutput: Int { out.count - outStart + plain.count }
    private var plain: [UInt8] = []

    private func encryptPending() {
        guard let tls, !plain.isEmpty else { return }
        var off = 0
        while off < plain.count {
            let n = plain.withUnsafeBytes {
                contrail_tls_write(UnsafeMutableRawPointer(tls), $0.baseAddress! + off, Int32(min(plain.count - off, 1 << 20)))
            }
            if n <= 0 { close(); return }
            off += Int(n)
        }
        plain.removeAll(keepingCapacity: true)
        drainTLS()
    }

    private func drainTLS() {
        guard let tls else { return }
        var buf = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = contrail_tls_drain(UnsafeMutableRawPointer(tls), &buf, Int32(buf.count))
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<Int(n)])
        }
    }

    func flush() {
        encryptPending()
        var wrote = 0
        while !closed && outStart < out.count {
            let n = out.withUnsafeBytes { write(fd, $0.baseAddress! + outStart, out.count - outStart) }
            if n > 0 {
                outStart += n
                wrote += n
                lastWriteProgressAt = loop.now
            } else if n < 0 && (errno == EAGAIN || errno == EINTR) {
                break
            } else {
                close()
                return
            }
        }
        if closed { return }
        // Wait for EPOLLOUT only when the socket pushed back; queued-but-unflushed output is written at
        // the end of the iteration anyway (toggling EPOLLOUT per response would cost two epoll_ctl).
        writeBlocked = outStart < out.count
        if wrote > 0, let w = activeWriter { w.drained(wrote) }
        if outStart == out.count {
            out.removeAll(keepingCapacity: out.capacity <= 1 << 20)
            outStart = 0
            if closeWhenFlushed { close(); return }
            if wrote > 0 && handler != nil && !inDrainCallback {
                inDrainCallback = true
                handler?.outputDrained()
                inDrainCallback = false
            }
        } else if outStart > 1 << 20 {
            out.removeFirst(outStart)
            outStart = 0
        }
        updateInterest()
    }

    /// Closes once everything queued has been sent.
    func closeAfterFlush() {
        guard !closed else { return }
        closeWhenFlushed = true
        if let tls {
            encryptPending()
            contrail_tls_shutdown(UnsafeMutableRawPointer(tls))
            drainTLS()
        }
        scheduleFlush()
    }

    func updateInterest() {
        guard !closed else { return }
        var events: UInt32 = 0
        if wantsInput && !closeWhenFlushed { events |= EventLoop.readable }
        if writeBlocked { events |= EventLoop.writable }
        if events != registeredEvents {
            registeredEvents = events
            loop.modify(fd, events: events)
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        loop.unregister(fd)
        loop.removeTicker(self)
        Glibc.close(fd)
        if let tls { contrail_tls_session_free(UnsafeMutableRawPointer(tls)) }
        tls = nil
        handler?.connectionClosed()
        out = []
        plain = []
        server.connectionClosed(self)
        // Callers up the stack (a handler, a stream) reference us unowned: stay alive until the loop
        // finishes this round.
        loop.execute { [self] in _ = self }
    }

    // MARK: timeouts and shutdown

    func tick(now: UInt64) {
        guard !closed else { return }
        let config = server.config
        if pendingOutput > 0 && Double(now - lastWriteProgressAt) / 1e9 > config.writeTimeout {
            close()
            return
        }
        if handler == nil {
            // Still sniffing (or mid-handshake): the header timeout applies.
            if Double(now - acceptedAt) / 1e9 > config.headerTimeout { close() }
            return
        }
        handler?.tick(now: now)
        if !closed, let h = handler, h.isIdle, pendingOutput == 0 {
            if server.isShuttingDown || Double(now - lastReadAt) / 1e9 > config.idleTimeout { close() }
        }
    }

    func beginGracefulShutdown() {
        guard !closed else { return }
        if let handler {
            handler.beginGracefulShutdown()
            if handler.isIdle && pendingOutput == 0 { close() }
        } else {
            close()
        }
    }
}
