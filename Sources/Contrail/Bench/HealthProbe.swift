/// A one-shot `GET` for container health checks (`contrail probe`, the image's HEALTHCHECK), on the
/// load generator's blocking HTTP/1.1 client: a slim image then needs no curl.
public enum HealthProbe {
    /// The status of `GET path` on host:port, or the failure.
    public static func status(host: String, port: Int, path: String, timeoutMs: Int) -> Result<Int, BenchFailure> {
        do throws(BenchFailure) {
            let socket = try BenchSocket(host: host, port: port, timeoutMs: timeoutMs)
            try socket.write(Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8))
            var response = HTTPResponseReader()
            try response.receive(from: socket) { (_: Int, _: UnsafeRawBufferPointer, _: UInt64) throws(BenchFailure) in }
            return .success(response.status)
        } catch {
            return .failure(error)
        }
    }
}
