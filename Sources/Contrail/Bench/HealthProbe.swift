/// A one-shot `GET` for container health checks (`contrail probe`, the image's HEALTHCHECK), on the
/// load generator's blocking HTTP/1.1 client: a slim image then needs no curl.
public enum HealthProbe {
    /// The status of `GET path` on host:port, or the failure.
    public static func status(host: String, port: Int, path: String, timeoutMs: Int) -> Result<Int, BenchFailure> {
        do throws(BenchFailure) {
            let socket = try BenchSocket(host: host, port: port, timeoutMs: timeoutMs)
            try socket.write(Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8))
            var response = HTTPResponseReader()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
            defer { buffer.deallocate() }
            while !response.complete {
                let n = try socket.read(into: buffer)
                if n == 0 {
                    guard response.endOfStream() else { throw .closed("the server closed the connection mid-response") }
                    break
                }
                try response.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) { (_: Int, _: UnsafeRawBufferPointer) throws(BenchFailure) in }
            }
            return .success(response.status)
        } catch {
            return .failure(error)
        }
    }
}
