import ArgumentParser
import Contrail

#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the JetStream HTTP and gRPC APIs.",
        discussion: "Every port speaks HTTP/1.1, HTTP/2 (h2c) and, with --tls-cert/--tls-key, TLS with ALPN; all routes answer on all ports. SIGTERM drains in-flight requests and exits 0.")

    @Option(name: .long, help: "Address to listen on.") var host = "0.0.0.0"
    @Option(name: .long, help: "HTTP port (JetStream's jetstream-http: 8000).") var httpPort = 8000
    @Option(name: .long, help: "gRPC port (JetStream: 9000).") var grpcPort = 9000
    @Option(name: .long, help: "I/O threads (default: one per core).") var ioThreads: Int?
    @Option(name: .long, help: "PEM certificate chain for TLS.") var tlsCert: String?
    @Option(name: .long, help: "PEM private key for TLS.") var tlsKey: String?
    @Option(name: .long, help: "Largest request head (bytes).") var maxHeaderBytes = 16 * 1024
    @Option(name: .long, help: "Largest request body (bytes).") var maxBodyBytes = 8 * 1024 * 1024
    @Option(name: .long, help: "Most open connections.") var maxConnections = 10_000
    @Option(name: .long, help: "Most concurrent HTTP/2 streams per connection.") var maxConcurrentStreams = 256
    @Option(name: .long, help: "Largest gRPC message (bytes).") var grpcMaxMessageBytes = 4 * 1024 * 1024
    @Option(name: .long, help: "Seconds allowed to send a request head.") var headerTimeout = 10.0
    @Option(name: .long, help: "Seconds an idle keep-alive connection stays open.") var idleTimeout = 75.0
    @Option(name: .long, help: "Seconds a connection may make no write progress.") var writeTimeout = 30.0
    @Option(name: .long, help: "Seconds in-flight requests get to finish after SIGTERM.") var shutdownGrace = 30.0
    @Flag(name: .long, help: .hidden) var testServices = false

    func validate() throws {
        for (name, port) in [("--http-port", httpPort), ("--grpc-port", grpcPort)] where !(0...65535).contains(port) {
            throw ValidationError("\(name) \(port) is not a port number")
        }
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if let n = ioThreads, n < 1 { throw ValidationError("--io-threads must be at least 1") }
    }

    func run() throws {
        var config = ServerConfig()
        config.host = host
        config.ports = httpPort == grpcPort ? [httpPort] : [httpPort, grpcPort]
        if let n = ioThreads { config.ioThreads = n }
        config.limits.maxHeaderBytes = maxHeaderBytes
        config.limits.maxBodyBytes = maxBodyBytes
        config.maxConnections = maxConnections
        config.maxConcurrentStreams = maxConcurrentStreams
        config.headerTimeout = headerTimeout
        config.idleTimeout = idleTimeout
        config.writeTimeout = writeTimeout
        config.shutdownGrace = shutdownGrace
        if let cert = tlsCert, let key = tlsKey { config.tls = TLSConfig(certificatePath: cert, keyPath: key) }

        let state = ServerState(.starting)
        let router = Router()
        let grpc = GRPCServer(maxMessageBytes: grpcMaxMessageBytes)
        router.grpc = grpc
        HealthAPI.install(on: router, grpc: grpc, state: state)
        if testServices { TestService.install(on: router, grpc: grpc) }

        let signals = Server.blockTerminationSignals()
        let server: Server
        do {
            server = try Server(config: config, responder: router)
            try server.start()
        } catch {
            throw fail("\(error)")
        }
        let ports = server.boundPorts.map { ":\($0)" }.joined(separator: " and ")
        log("listening on \(host)\(ports) (HTTP/1.1, h2c\(config.tls != nil ? ", TLS" : "")), \(config.ioThreads) I/O threads")
        // No engine yet: the server is ready as soon as it listens.
        state.set(.ready)
        let signal = server.runUntilSignal(signalFd: signals) {
            state.set(.draining)
            log("draining (grace \(Int(shutdownGrace)) s)")
        }
        log("\(signal == SIGINT ? "SIGINT" : "SIGTERM"): stopped")
    }
}

func log(_ message: String) {
    let line = "contrail: \(message)\n"
    line.withCString { _ = write(2, $0, strlen($0)) }
}
