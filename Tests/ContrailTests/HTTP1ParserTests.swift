import Testing

@testable import Contrail

@Suite("HTTP/1.1 parser")
struct HTTP1ParserTests {
    func parse(_ text: String, limits: HTTPLimits = HTTPLimits()) -> [HTTP1ParseEvent] {
        var p = HTTP1Parser(limits: limits)
        return p.feed(Array(text.utf8))
    }

    func status(_ text: String, limits: HTTPLimits = HTTPLimits()) -> Int? {
        for e in parse(text, limits: limits) { if case .error(let s, _) = e { return s } }
        return nil
    }

    func requests(_ events: [HTTP1ParseEvent]) -> [(HTTP1RequestHead, [UInt8])] {
        events.compactMap { if case .request(let h, let b) = $0 { return (h, b) } else { return nil } }
    }

    @Test func simpleGet() throws {
        let r = requests(parse("GET /healthcheck?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n"))
        #expect(r.count == 1)
        let head = try #require(r.first?.0)
        #expect(head.method == "GET" && head.target == "/healthcheck?x=1" && head.version == .http1_1 && head.keepAlive)
        #expect(head.headers["user-agent"] == "t" && head.headers["host"] == "a")
    }

    @Test func contentLengthAndChunkedBodies() {
        let cl = requests(parse("POST /generate HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"))
        #expect(cl.first?.1 == Array("hello".utf8))
        let chunked = requests(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n"))
        #expect(chunked.first?.1 == Array("hello world".utf8))
    }

    /// Every request parses identically however the bytes are split.
    @Test func splitAtEveryByteBoundary() {
        let inputs = [
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: b\r\n\r\n",
            "\r\nGET / HTTP/1.0\r\n\r\n",
        ]
        for input in inputs {
            let bytes = Array(input.utf8)
            var whole = HTTP1Parser()
            let expected = whole.feed(bytes)
            #expect(requests(expected).count >= 1)
            for cut in 1..<bytes.count {
                var p = HTTP1Parser()
                let events = p.feed(Array(bytes[..<cut])) + p.feed(Array(bytes[cut...]))
                #expect(events == expected, "split at \(cut)")
            }
            var p = HTTP1Parser()
            var events: [HTTP1ParseEvent] = []
            for b in bytes { events += p.feed([b]) }
            #expect(events == expected, "byte by byte")
        }
    }

    @Test func pipelinedRequestsInOrder() {
        let r = requests(parse("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        #expect(r.map(\.0.target) == ["/1", "/2", "/3"])
        #expect(r.map(\.0.keepAlive) == [true, true, false])
    }

    @Test func keepAliveRules() {
        #expect(requests(parse("GET / HTTP/1.0\r\n\r\n")).first?.0.keepAlive == false)
        #expect(requests(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")).first?.0.keepAlive == true)
        #expect(requests(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n")).first?.0.keepAlive == false)
    }

    @Test func expectContinue() {
        var p = HTTP1Parser()
        #expect(p.feed(Array("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".utf8)) == [.continueNeeded])
        #expect(requests(p.feed(Array("ok".utf8))).first?.1 == Array("ok".utf8))
    }

    @Test func h2cUpgradeDetected() {
        let r = requests(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"))
        #expect(r.first?.0.upgradeH2C == true)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),                        // obs-fold
        ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),                                      // bare LF
        ("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),                                 // bare CR
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),  // chunked not last
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),  // unknown coding
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.0\r\n\r\n", 411),
        ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400),                                    // space in name
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),                                    // space before colon
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{01}b\r\n\r\n", 400),                      // control byte
        ("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),                                                // missing Host
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),                                    // double space
        ("GET nopath HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("G\u{7F}T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),   // bad chunk size
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400), // no CRLF after data
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", 400),   // bare LF in size line
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400), // overflow
    ])
    func rejections(_ input: String, _ expected: Int) {
        #expect(status(input) == expected, "\(String(reflecting: input))")
    }

    @Test func sizeLimits() {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 256
        limits.maxTargetBytes = 64
        limits.maxBodyBytes = 10
        #expect(status("GET /\(String(repeating: "a", count: 100)) HTTP/1.1\r\nHost: a\r\n\r\n", limits: limits) == 414)
        // A long target without a line end yet is refused before the head completes.
        #expect(status("GET /\(String(repeating: "a", count: 200))", limits: limits) == 414)
        #expect(status("GET / HTTP/1.1\r\nHost: a\r\nX: \(String(repeating: "b", count: 300))\r\n\r\n", limits: limits) == 431)
        #expect(status("GET / HTTP/1.1\r\nHost: a\r\nX: \(String(repeating: "b", count: 300))", limits: limits) == 431)
        #expect(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", limits: limits) == 413)
        #expect(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\n", limits: limits) == 413)
        var many = HTTPLimits()
        many.maxHeaderCount = 3
        #expect(status("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits: many) == 431)
    }

    @Test func nothingAfterAnError() {
        var p = HTTP1Parser()
        let first = p.feed(Array("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n".utf8))
        #expect(first.count == 1)
        #expect(p.feed(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)).isEmpty)
        #expect(p.hasFailed)
    }

    @Test func absoluteFormAndAsterisk() {
        #expect(requests(parse("GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n")).first?.0.target == "/x?y")
        #expect(requests(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")).first?.0.target == "*")
    }
}
