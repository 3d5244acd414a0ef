import Testing

@testable import Contrail

/// The load generator's parsing and statistics, without a server (the Python suite runs it against one).
@Suite("Bench")
struct BenchTests {
    /// `bytes` as a raw buffer for a typed-throws body (Array.withUnsafeBytes's rethrows thunk crashes
    /// Swift 6.3's IR generation with a typed error).
    func withBytes(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(BenchFailure) -> Void) throws(BenchFailure) {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 1)
        defer { copy.deallocate() }
        copy.copyBytes(from: bytes)
        try body(UnsafeRawBufferPointer(rebasing: copy[0..<bytes.count]))
    }

    /// Feeds `response` split at `cut` and returns (status, body, complete).
    func read(_ response: String, cut: Int) throws -> (Int, String, Bool) {
        var reader = HTTPResponseReader()
        var body: [UInt8] = []
        var status = 0
        let bytes = Array(response.utf8)
        for part in [bytes[..<cut], bytes[cut...]] {
            try withBytes(Array(part)) { raw throws(BenchFailure) in
                try reader.feed(raw) { (s: Int, b: UnsafeRawBufferPointer) throws(BenchFailure) in
                    status = s
                    body += b
                }
            }
        }
        return (status, String(decoding: body, as: UTF8.self), reader.complete)
    }

    @Test func chunkedResponseSplitAnywhere() throws {
        let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
            + "7\r\ndata: 1\r\n" + "a;ext=1\r\n\ndata: 22\n\r\n" + "0\r\nX-Trailer: t\r\n\r\n"
        for cut in 0...response.utf8.count {
            let (status, body, complete) = try read(response, cut: cut)
            #expect(status == 200 && body == "data: 1\ndata: 22\n" && complete, "cut at \(cut)")
        }
    }

    @Test func contentLengthAndCloseFraming() throws {
        let (s1, b1, c1) = try read("HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!", cut: 30)
        #expect(s1 == 401 && b1 == "nope!" && c1)
        var reader = HTTPResponseReader()
        try withBytes(Array("HTTP/1.0 200 OK\r\n\r\npartial".utf8)) { raw throws(BenchFailure) in
            try reader.feed(raw) { (_: Int, _: UnsafeRawBufferPointer) throws(BenchFailure) in }
        }
        #expect(!reader.complete && reader.endOfStream())
    }

    @Test func malformedResponsesAreErrors() {
        #expect(throws: BenchFailure.self) { try read("SMTP ready\r\n\r\n", cut: 3) }
        #expect(throws: BenchFailure.self) { try read("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", cut: 10) }
    }

    @Test func linesAcrossFeeds() throws {
        var splitter = LineSplitter()
        var lines: [String] = []
        for piece in ["data: a\r", "\nda", "ta: b\n\n", "tail"] {
            try withBytes(Array(piece.utf8)) { raw throws(BenchFailure) in
                try splitter.feed(raw) { (l: ArraySlice<UInt8>) throws(BenchFailure) in lines.append(String(decoding: l, as: UTF8.self)) }
            }
        }
        #expect(lines == ["data: a", "data: b", ""])
    }

    @Test func grpcMessagesReassembled() throws {
        let a = grpcFramed(GRPCBenchClient.encodeDecodeRequest(ids: [1, 2, 3], maxTokens: 7))
        let b = grpcFramed(JetStreamAPI.encodeDecodeResponse(text: "hi", ids: [5, 6]))
        let stream = a + b
        for cut in 0...stream.count {
            var reader = GRPCMessageReader()
            var messages: [[UInt8]] = []
            for part in [stream[..<cut], stream[cut...]] {
                try withBytes(Array(part)) { raw throws(BenchFailure) in
                    try reader.feed(raw) { (m: [UInt8]) throws(BenchFailure) in messages.append(m) }
                }
            }
            #expect(messages.map(\.count) == [a.count - 5, b.count - 5])
        }
        #expect(try GRPCBenchClient.decodeResponseTokens(Array(b.dropFirst(5))) == 2)
    }

    @Test func percentilesInterpolate() {
        let d = BenchResult.Distribution([4, 1, 3, 2])
        #expect(d.mean == 2.5 && d.p50 == 2.5 && abs(d.p90 - 3.7) < 1e-9 && abs(d.p99 - 3.97) < 1e-9)
        #expect(BenchResult.Distribution([]).count == 0)
    }

    @Test func addresses() {
        #expect(BenchTarget.parseAddress("127.0.0.1:8000")! == ("127.0.0.1", 8000))
        #expect(BenchTarget.parseAddress("[::1]:9000")! == ("::1", 9000))
        #expect(BenchTarget.parseAddress("localhost") == nil && BenchTarget.parseAddress(":80") == nil)
        #expect(BenchTarget.parseAddress("h:70000") == nil)
    }

    @Test func syntheticPromptsHaveExactLengths() throws {
        let tok = try Tokenizer.load(path: ModelLocation.defaultModel)
        let prompts = BenchWorkload.synthetic(count: 5, inputLength: 50, outputLength: 10, spread: 0, seed: 3, tokenizer: tok)
        #expect(prompts.allSatisfy { $0.ids.count == 50 && $0.outputTokens == 10 })
        #expect(Set(prompts.map(\.text)).count == 5)
        let spread = BenchWorkload.synthetic(count: 50, inputLength: 40, outputLength: 10, spread: 0.5, seed: 3, tokenizer: tok)
        #expect(spread.allSatisfy { (20...60).contains($0.ids.count) && (5...15).contains($0.outputTokens) })
        #expect(Set(spread.map(\.outputTokens)).count > 3)
    }
}
