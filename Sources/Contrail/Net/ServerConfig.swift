/// Listener, protocol limits and timeouts. Defaults suit a server behind a Kubernetes Service.
public struct ServerConfig: Sendable {
    public var host = "0.0.0.0"
    public var ports: [Int] = [8000, 9000]
    /// I/O threads; default one per core.
    public var ioThreads = ServerConfig.cores
    public var limits = HTTPLimits()
    public var maxConnections = 10_000
    public var maxConcurrentStreams = 256
    /// Slowloris guard: a request head must arrive within this many seconds of its first byte.
    public var headerTimeout = 10.0
    /// Idle keep-alive connections close after this many seconds.
    public var idleTimeout = 75.0
    /// A connection whose pending output makes no progress for this long is closed.
    public var writeTimeout = 30.0
    /// Bytes a response may have written but not yet sent before `ResponseWriter.write` reports
    /// back-pressure (a streaming producer then gives up on a client that stopped reading).
    public var responseBufferBytes = 1 << 20
    /// On SIGTERM: how long in-flight responses may run before connections are closed.
    public var shutdownGrace = 30.0
    public var tls: TLSConfig? = nil

    public init() {}

    public static var cores: Int {
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return n > 0 ? n : 1
    }
}

/// Certificate and key (PEM files); TLS 1.2+, ALPN h2 and http/1.1. TLS and cleartext share ports.
public struct TLSConfig: Sendable {
    public var certificatePath: String
    public var keyPath: String

    public init(certificatePath: String, keyPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
    }
}

#if canImport(Glibc)
import Glibc
#endif
