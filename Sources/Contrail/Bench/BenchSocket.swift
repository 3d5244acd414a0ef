import CShims

#if canImport(Glibc)
import Glibc
#endif

/// A blocking client TCP connection for the load generator: one per request, owned by the thread that
/// runs it. Every call is bounded by the connection's timeout, so a stalled server fails a request
/// instead of hanging the benchmark.
final class BenchSocket {
    let fd: Int32

    init(host: String, port: Int, timeoutMs: Int) throws(BenchFailure) {
        let fd = contrail_connect_blocking(host, UInt16(port), Int32(timeoutMs))
        guard fd >= 0 else {
            let e = errno
            throw e == ETIMEDOUT ? .timeout : .connect(String(cString: strerror(e)))
        }
        self.fd = fd
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) throws(BenchFailure) {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { copy.deallocate() }
        copy.copyBytes(from: bytes)
        try write(UnsafeRawBufferPointer(copy))
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(BenchFailure) {
        var done = 0
        while done < bytes.count {
            let n = send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw errno == EAGAIN ? .timeout : .closed("send: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Reads what is available into `buffer`; 0 at end of stream.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(BenchFailure) -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw errno == EAGAIN ? .timeout : .closed("recv: \(String(cString: strerror(errno)))")
        }
    }
}
