import CShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What every connection shares: configuration, the responder, TLS context, counters, shutdown state.
final class ServerCore: @unchecked Sendable {
    let config: ServerConfig
    let responder: any HTTPResponder
    let tlsContext: UnsafeMutableRawPointer?
    private let connectionCount = Atomic<Int>(0)
    private let shuttingDown = Atomic<Bool>(false)

    init(config: ServerConfig, responder: any HTTPResponder) throws {
        self.config = config
        self.responder = responder
        if let tls = config.tls {
            var error = [CChar](repeating: 0, count: 512)
            guard let ctx = contrail_tls_server_context(tls.certificatePath, tls.keyPath, &error, error.count) else {
                throw NetError.config(error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
            }
            tlsContext = ctx
        } else {
            tlsContext = nil
        }
    }

    var isShuttingDown: Bool { shuttingDown.load(ordering: .acquiring) }
    func markShuttingDown() { shuttingDown.store(true, ordering: .releasing) }
    var openConnections: Int { connectionCount.load(ordering: .relaxed) }

    func admit() -> Bool {
        let n = connectionCount.add(1, ordering: .relaxed).newValue
        if n > config.maxConnections {
            connectionCount.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func connectionClosed(_ c: Connection) {
        connectionCount.subtract(1, ordering: .relaxed)
        loopConnections[c.loop.index].withLock { $0[ObjectIdentifier(c)] = nil }
    }

    /// Open connections per loop, so shutdown can reach them (touched on their loop, read at shutdown).
    var loopConnections: [Locked<[ObjectIdentifier: Connection]>] = []
}

/// A listening socket shared by every loop (EPOLLEXCLUSIVE wakes one loop per connection).
final class Listener: EventHandler {
    let fd: Int32
    let port: Int
    unowned let loop: EventLoop
    let server: ServerCore

    init(fd: Int32, port: Int, loop: EventLoop, server: ServerCore) {
        self.fd = fd
        self.port = port
        self.loop = loop
        self.server = server
    }

    func handleEvents(_ events: UInt32) {
        for _ in 0..<64 {
            let cfd = contrail_accept(fd)
            if cfd < 0 { return }
            guard !server.isShuttingDown, server.admit() else {
                close(cfd)
                continue
            }
            let c = Connection(fd: cfd, loop: loop, server: server)
            do {
                try c.start()
                server.loopConnections[loop.index].withLock { $0[ObjectIdentifier(c)] = c }
            } catch {
                close(cfd)
                server.connectionClosed(c)
            }
        }
    }
}

/// Contrail's HTTP server: every port speaks HTTP/1.1, h2c and TLS (h2 / http/1.1 by ALPN), all routed to
/// one responder. Runs `ioThreads` event loops.
public final class Server: @unchecked Sendable {
    let core: ServerCore
    private var loops: [EventLoop] = []
    private var listenFds: [Int32] = []
    private var listeners: [[Listener]] = []
    /// Bound ports, in the order of `config.ports` (resolves port 0 in tests).
    public private(set) var boundPorts: [Int] = []
    private let done = Locked(false)

    public init(config: ServerConfig, responder: any HTTPResponder) throws {
        core = try ServerCore(config: config, responder: responder)
    }

    public var config: ServerConfig { core.config }
    public var openConnections: Int { core.openConnections }
    public var isShuttingDown: Bool { core.isShuttingDown }

    /// Binds every port and starts the I/O threads.
    public func start() throws {
        contrail_ignore_sigpipe()
        for port in core.config.ports {
            let fd = contrail_listen_tcp(core.config.host, UInt16(clamping: port), 4096)
            guard fd >= 0 else {
                let e = errno
                for f in listenFds { close(f) }
                throw NetError.config("cannot listen on \(core.config.host):\(port): \(String(cString: strerror(e)))")
            }
            listenFds.append(fd)
            boundPorts.append(Int(contrail_local_port(fd)))
        }
        let threads = max(1, core.config.ioThreads)
        core.loopConnections = (0..<threads).map { _ in Locked([:]) }
        for i in 0..<threads {
            let loop = try EventLoop(index: i)
            var mine: [Listener] = []
            for (k, fd) in listenFds.enumerated() {
                let l = Listener(fd: fd, port: boundPorts[k], loop: loop, server: core)
                try loop.register(fd, events: EventLoop.readable | EventLoop.exclusive, handler: l)
                mine.append(l)
            }
            listeners.append(mine)
            loops.append(loop)
        }
        for loop in loops { try loop.start() }
    }

    /// Graceful shutdown: stop accepting, tell every connection (GOAWAY / `Connection: close`), let
    /// in-flight responses finish within `config.shutdownGrace` seconds, then close what remains and stop.
    public func shutdown() {
        guard !core.isShuttingDown else { return }
        core.markShuttingDown()
        for (i, loop) in loops.enumerated() {
            let mine = listeners[i]
            let conns = core.loopConnections[i]
            loop.execute {
                for l in mine { loop.unregister(l.fd) }
                for c in conns.withLock({ Array($0.values) }) { c.beginGracefulShutdown() }
            }
        }
        let deadline = contrail_now_ns() + UInt64(core.config.shutdownGrace * 1e9)
        while core.openConnections > 0 && contrail_now_ns() < deadline { usleep(20_000) }
        for (i, loop) in loops.enumerated() {
            let conns = core.loopConnections[i]
            loop.execute { for c in conns.withLock({ Array($0.values) }) { c.close() } }
        }
        while core.openConnections > 0 && contrail_now_ns() < deadline + 2_000_000_000 { usleep(10_000) }
        for loop in loops { loop.stop() }
        for loop in loops { loop.join() }
        for fd in listenFds { close(fd) }
        listenFds = []
        done.withLock { $0 = true }
    }

    /// Blocks SIGTERM/SIGINT in this thread and every thread started after it, returning a signalfd to
    /// wait on. Call before `start()` so no I/O thread takes the signal.
    public static func blockTerminationSignals() -> Int32 { contrail_signalfd_term() }

    /// Waits for SIGTERM or SIGINT on `signalFd`, runs `onSignal` (readiness flips to draining before
    /// connections are told), then shuts down gracefully. Returns the signal number.
    @discardableResult
    public func runUntilSignal(signalFd: Int32, onSignal: () -> Void = {}) -> Int32 {
        var signal: Int32 = -1
        var pfd = pollfd(fd: signalFd, events: Int16(POLLIN), revents: 0)
        while signal < 0 {
            if poll(&pfd, 1, -1) > 0 { signal = contrail_signalfd_read(signalFd) }
        }
        close(signalFd)
        onSignal()
        shutdown()
        return signal
    }
}
