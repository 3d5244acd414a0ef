import Dispatch
import Synchronization

/// A gRPC service for the network tests only (`contrail serve --test-services`): `Stream` sends N replies
/// with a pause between them and records whether the client cancelled; `Echo` returns its payload.
/// Messages (field numbers): StreamRequest{count=1, interval_ms=2, payload_bytes=3},
/// StreamReply{index=1, payload=2}, EchoMessage{payload=1}. `GET /test/stats` reports the counters.
public enum TestService {
    static let cancelled = Atomic<Int>(0)
    static let completed = Atomic<Int>(0)
    /// Writes that reported back-pressure (client not reading) on `/test/stream`.
    static let pushback = Atomic<Int>(0)

    public static func install(on router: Router, grpc: GRPCServer) {
        grpc.register("contrail.test.Test", "Stream") { call in
            var count = 0, interval = 0, payload = 0
            guard decode(call.message, { field, value in
                if field == 1 { count = value } else if field == 2 { interval = value } else if field == 3 { payload = value }
            }) else {
                call.finish(GRPCStatus(GRPCStatus.invalidArgument, "malformed StreamRequest"))
                return
            }
            let (n, pause, size) = (count, interval, payload)
            DispatchQueue.global().async {
                for i in 0..<n {
                    if call.isCancelled { break }
                    var w = ProtoWireWriter()
                    w.varintField(1, UInt64(i))
                    w.bytesField(2, [UInt8](repeating: UInt8(i & 0xFF), count: size))
                    call.send(w.bytes)
                    if pause > 0 { usleepMillis(pause) }
                }
                if call.isCancelled {
                    cancelled.add(1, ordering: .relaxed)
                } else {
                    completed.add(1, ordering: .relaxed)
                    call.finish()
                }
            }
        }
        grpc.register("contrail.test.Test", "Echo") { call in
            call.send(call.message)
            call.finish()
        }
        // A streamed HTTP body: `n` chunks of `size` bytes (chunked on HTTP/1.1, DATA frames on HTTP/2).
        // A producer that sees back-pressure stops early and counts it, as the serving layer will.
        router.add("GET", "/test/stream") { request, writer in
            var n = 10, size = 16
            for pair in (request.query ?? "").split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, let v = Int(kv[1]) else { continue }
                if kv[0] == "n" { n = v } else if kv[0] == "size" { size = v }
            }
            writer.start(status: 200, headers: ["content-type": "application/octet-stream"])
            let (count, bytes) = (n, size)
            DispatchQueue.global().async {
                for i in 0..<count {
                    if !writer.write([UInt8](repeating: UInt8(0x61 + i % 26), count: bytes)) {
                        if writer.isCancelled { cancelled.add(1, ordering: .relaxed); return }
                        pushback.add(1, ordering: .relaxed)
                        // Wait for the client to catch up, giving up after 10 s.
                        var waited = 0
                        while writer.bufferedBytes > writer.highWaterMark / 2 && !writer.isCancelled && waited < 10_000 {
                            usleepMillis(5)
                            waited += 5
                        }
                        if writer.isCancelled || waited >= 10_000 { cancelled.add(1, ordering: .relaxed); return }
                    }
                }
                writer.finish()
                completed.add(1, ordering: .relaxed)
            }
        }
        router.add("GET", "/test/stats") { _, writer in
            writer.respond(status: 200, json: .object([
                ("cancelled", .number(Double(cancelled.load(ordering: .relaxed)))),
                ("completed", .number(Double(completed.load(ordering: .relaxed)))),
                ("pushback", .number(Double(pushback.load(ordering: .relaxed)))),
            ]))
        }
    }

    /// Reads varint fields; false on malformed input.
    static func decode(_ bytes: [UInt8], _ field: (Int, Int) -> Void) -> Bool {
        bytes.withUnsafeBytes { raw in
            var r = ProtoWireReader(bytes: raw)
            do {
                while !r.atEnd {
                    let (n, value) = try r.next()
                    if case .varint(let v) = value { field(n, Int(truncatingIfNeeded: v)) }
                }
                return true
            } catch {
                return false
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

func usleepMillis(_ ms: Int) { usleep(UInt32(ms * 1000)) }
