import ArgumentParser
import Contrail

/// A health check for containers: exit 0 when `GET /healthcheck` answers 200 (loaded and warmed up).
struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Exit 0 if a server's /healthcheck answers 200, 1 otherwise (Docker HEALTHCHECK, exec probes).")

    @Option(name: .long, help: "Server address.") var host = "127.0.0.1"
    @Option(name: .long, help: "HTTP port.") var port = 8000
    @Option(name: .long, help: "Path to GET.") var path = "/healthcheck"
    @Option(name: .long, help: "Seconds to wait.") var timeout = 3.0

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard path.hasPrefix("/") else { throw ValidationError("--path must start with /") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        switch HealthProbe.status(host: host, port: port, path: path, timeoutMs: Int(timeout * 1000)) {
        case .success(200): return
        case .success(let status): throw fail("GET \(path) on \(host):\(port) answered \(status)")
        case .failure(let error): throw fail("GET \(path) on \(host):\(port): \(error)")
        }
    }
}
