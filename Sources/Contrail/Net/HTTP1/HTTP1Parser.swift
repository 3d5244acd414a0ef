/// Size limits a parser enforces (and the status each breach gets).
public struct HTTPLimits: Sendable {
    /// Request line + header fields (431; 414 when the request line alone is too long).
    public var maxHeaderBytes = 16 * 1024
    public var maxTargetBytes = 8 * 1024
    public var maxHeaderCount = 100
    /// Request body (413).
    public var maxBodyBytes = 8 * 1024 * 1024

    public init() {}
}

/// A parsed HTTP/1.x request head with its framing decided.
struct HTTP1RequestHead: Equatable {
    var method: String
    var target: String
    var version: HTTPVersion
    var headers: HTTPHeaders
    var keepAlive: Bool
    var expectContinue: Bool
    /// `Upgrade: h2c` with `HTTP2-Settings` (RFC 7540 §3.2), on a request without a body.
    var upgradeH2C: Bool
}

enum HTTP1ParseEvent: Equatable {
    /// The client sent `Expect: 100-continue` and a body is expected: answer 100 before it is sent.
    case continueNeeded
    /// A complete request; further pipelined requests may follow.
    case request(HTTP1RequestHead, body: [UInt8])
    /// Unrecoverable: answer `status` with `message` and close (framing can no longer be trusted).
    case error(status: Int, message: String)
}

struct HTTP1ParseError: Error {
    let status: Int
    let message: String
}

/// HTTP/1.1 request parsing as a state machine over bytes (RFC 9112), strict where leniency enables
/// request smuggling: no obs-fold, no bare CR or LF, no conflicting Content-Length / Transfer-Encoding.
/// It takes any split of the input and yields the same events.
struct HTTP1Parser {
    let limits: HTTPLimits
    private var buffer: [UInt8] = []
    private var scanned = 0  // bytes of `buffer` already searched for the end of the head
    private var state = State.head

    private enum State {
        case head
        case fixedBody(HTTP1RequestHead, remaining: Int, body: [UInt8])
        case chunkSize(HTTP1RequestHead, body: [UInt8])
        case chunkData(HTTP1RequestHead, remaining: Int, body: [UInt8])
        case chunkDataEnd(HTTP1RequestHead, body: [UInt8])
        case trailers(HTTP1RequestHead, body: [UInt8], bytes: Int)
        case failed
    }

    init(limits: HTTPLimits = HTTPLimits()) { self.limits = limits }

    /// Bytes received but not yet consumed (pipelined requests wait here).
    var bufferedBytes: Int { buffer.count }
    var isIdle: Bool { if case .head = state { return buffer.isEmpty } else { return false } }
    /// Hands over unparsed bytes (after an h2c upgrade they belong to HTTP/2).
    mutating func takeBuffered() -> [UInt8] {
        defer { buffer = []; scanned = 0 }
        return buffer
    }

    var hasFailed: Bool { if case .failed = state { return true } else { return false } }

    mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [HTTP1ParseEvent] {
        if case .failed = state { return [] }
        buffer.append(contentsOf: bytes)
        var events: [HTTP1ParseEvent] = []
        var consumed = 0
        while true {
            let (event, used, progressed) = step(from: consumed)
            consumed += used
            if let event {
                events.append(event)
                if case .error = event {
                    state = .failed
                    break
                }
            }
            if !progressed { break }
        }
        if consumed > 0 {
            buffer.removeFirst(consumed)
            scanned = max(0, scanned - consumed)
        }
        return events
    }

    mutating func feed(_ bytes: [UInt8]) -> [HTTP1ParseEvent] { bytes.withUnsafeBytes { feed($0) } }

    /// One parsing step from `start`: (event, bytes consumed, whether to continue).
    private mutating func step(from start: Int) -> (HTTP1ParseEvent?, Int, Bool) {
        let available = buffer.count - start
        switch state {
        case .failed:
            return (nil, 0, false)

        case .head:
            // Ignore empty lines before a request line (RFC 9112 §2.2).
            var s = start
            while buffer.count - s >= 2, buffer[s] == 0x0D, buffer[s + 1] == 0x0A { s += 1 + 1 }
            if s > start { scanned = max(scanned, s) }
            guard let end = findHeadEnd(from: s) else {
                let pending = buffer.count - s
                // The request line alone (complete or still arriving) is too long: 414.
                let requestLine = findLF(from: s).map { $0 - s } ?? pending
                if requestLine > limits.maxTargetBytes + 32 {
                    return (.error(status: 414, message: "request target too long"), 0, false)
                }
                if pending > limits.maxHeaderBytes { return (.error(status: 431, message: "request header fields too large"), 0, false) }
                return (nil, s - start, false)
            }
            if end - s > limits.maxHeaderBytes { return (.error(status: 431, message: "request header fields too large"), 0, false) }
            switch parseHead(s..<end) {
            case .failure(let e): return (.error(status: e.status, message: e.message), 0, false)
            case .success(let (head, framing)):
                let used = end + 4 - start
                scanned = 0
                switch framing {
                case .none:
                    state = .head
                    return (.request(head, body: []), used, true)
                case .length(let n):
                    state = .fixedBody(head, remaining: n, body: [])
                    return (head.expectContinue && n > 0 ? .continueNeeded : nil, used, true)
                case .chunked:
                    state = .chunkSize(head, body: [])
                    return (head.expectContinue ? .continueNeeded : nil, used, true)
                }
            }

        case .fixedBody(let head, let remaining, var body):
            let n = min(remaining, available)
            if n > 0 { body.append(contentsOf: buffer[start..<start + n]) }
            if remaining - n == 0 {
                state = .head
                return (.request(head, body: body), n, true)
            }
            state = .fixedBody(head, remaining: remaining - n, body: body)
            return (nil, n, false)

        case .chunkSize(let head, let body):
            guard let lf = findLF(from: start) else {
                if available > 1024 { return (.error(status: 400, message: "chunk size line too long"), 0, false) }
                return (nil, 0, false)
            }
            guard lf > start, buffer[lf - 1] == 0x0D else { return (.error(status: 400, message: "bare LF in chunked body"), 0, false) }
            var i = start
            var size = 0
            var digits = 0
            while i < lf - 1, let d = Self.hexValue(buffer[i]) {
                size = size << 4 | d
                digits += 1
                i += 1
                if digits > 15 { return (.error(status: 400, message: "chunk size overflow"), 0, false) }
            }
            guard digits > 0 else { return (.error(status: 400, message: "invalid chunk size"), 0, false) }
            // Chunk extensions are allowed and ignored, but must be made of visible characters.
            while i < lf - 1 {
                let c = buffer[i]
                if c == 0x3B || c == 0x20 || c == 0x09 || Self.isVisible(c) { i += 1 } else {
                    return (.error(status: 400, message: "invalid chunk extension"), 0, false)
                }
            }
            if i < lf - 1 || (digits < lf - 1 - start && buffer[start + digits] != 0x3B && buffer[start + digits] != 0x20 && buffer[start + digits] != 0x09) {
                return (.error(status: 400, message: "invalid chunk size"), 0, false)
            }
            if body.count + size > limits.maxBodyBytes { return (.error(status: 413, message: "request body too large"), 0, false) }
            state = size == 0 ? .trailers(head, body: body, bytes: 0) : .chunkData(head, remaining: size, body: body)
            return (nil, lf + 1 - start, true)

        case .chunkData(let head, let remaining, var body):
            let n = min(remaining, available)
            if n > 0 { body.append(contentsOf: buffer[start..<start + n]) }
            state = remaining - n == 0 ? .chunkDataEnd(head, body: body) : .chunkData(head, remaining: remaining - n, body: body)
            return (nil, n, remaining - n == 0)

        case .chunkDataEnd(let head, let body):
            guard available >= 2 else { return (nil, 0, false) }
            guard buffer[start] == 0x0D, buffer[start + 1] == 0x0A else {
                return (.error(status: 400, message: "chunk data not followed by CRLF"), 0, false)
            }
            state = .chunkSize(head, body: body)
            return (nil, 2, true)

        case .trailers(let head, let body, let bytes):
            guard let lf = findLF(from: start) else {
                if bytes + available > limits.maxHeaderBytes { return (.error(status: 431, message: "trailer fields too large"), 0, false) }
                return (nil, 0, false)
            }
            guard lf > start, buffer[lf - 1] == 0x0D else { return (.error(status: 400, message: "bare LF in trailer section"), 0, false) }
            if lf - 1 == start {
                state = .head
                return (.request(head, body: body), 2, true)
            }
            if case .failure(let e) = parseField(start..<lf - 1) { return (.error(status: e.status, message: e.message), 0, false) }
            let total = bytes + lf + 1 - start
            if total > limits.maxHeaderBytes { return (.error(status: 431, message: "trailer fields too large"), 0, false) }
            state = .trailers(head, body: body, bytes: total)
            return (nil, lf + 1 - start, true)
        }
    }

    // MARK: head

    private enum Framing { case none, length(Int), chunked }

    private func findLF(from start: Int) -> Int? {
        var i = start
        while i < buffer.count {
            if buffer[i] == 0x0A { return i }
            i += 1
        }
        return nil
    }

    /// Index of the blank line's CR ("\r\n\r\n"), scanning only new bytes.
    private mutating func findHeadEnd(from start: Int) -> Int? {
        var i = max(start, scanned - 3)
        let n = buffer.count
        while i + 3 < n {
            if buffer[i + 3] == 0x0A, buffer[i + 2] == 0x0D, buffer[i + 1] == 0x0A, buffer[i] == 0x0D { return i }
            i += 1
        }
        scanned = max(start, n)
        return nil
    }

    /// Header fields that decide framing and connection handling, collected while parsing the head.
    private struct Special {
        var hosts = 0
        var contentLength: [Range<Int>] = []
        var transferEncoding: [Range<Int>] = []
        var connection: [Range<Int>] = []
        var expect: Range<Int>?
        var upgrade: [Range<Int>] = []
        var http2Settings = 0
    }

    private func parseHead(_ range: Range<Int>) -> Result<(HTTP1RequestHead, Framing), HTTP1ParseError> {
        // Line structure: CRLF only.
        var lineEnds: [Int] = []
        lineEnds.reserveCapacity(16)
        var i = range.lowerBound
        while i < range.upperBound {
            let c = buffer[i]
            if c == 0x0D {
                guard i + 1 < range.upperBound, buffer[i + 1] == 0x0A else { return .failure(HTTP1ParseError(status: 400, message: "bare CR in request head")) }
                lineEnds.append(i)
                i += 2
                continue
            }
            if c == 0x0A { return .failure(HTTP1ParseError(status: 400, message: "bare LF in request head")) }
            i += 1
        }
        lineEnds.append(range.upperBound)

        // Request line: method SP request-target SP HTTP-version.
        let line = range.lowerBound..<lineEnds[0]
        guard let sp1 = buffer[line].firstIndex(of: 0x20),
              let sp2 = buffer[(sp1 + 1)..<line.upperBound].firstIndex(of: 0x20),
              sp1 > line.lowerBound, sp2 > sp1 + 1, sp2 + 1 < line.upperBound,
              buffer[(sp2 + 1)..<line.upperBound].firstIndex(of: 0x20) == nil else {
            return .failure(HTTP1ParseError(status: 400, message: "malformed request line"))
        }
        let methodRange = line.lowerBound..<sp1, targetRange = (sp1 + 1)..<sp2, versionRange = (sp2 + 1)..<line.upperBound
        for k in methodRange where !Self.isTokenChar(buffer[k]) { return .failure(HTTP1ParseError(status: 400, message: "invalid method")) }
        if targetRange.count > limits.maxTargetBytes { return .failure(HTTP1ParseError(status: 414, message: "request target too long")) }
        for k in targetRange where !Self.isVisible(buffer[k]) { return .failure(HTTP1ParseError(status: 400, message: "invalid request target")) }
        let version: HTTPVersion
        if versionRange.count == 8 && buffer[versionRange.lowerBound..<versionRange.lowerBound + 5].elementsEqual("HTTP/".utf8)
            && Self.isDigit(buffer[versionRange.lowerBound + 5]) && buffer[versionRange.lowerBound + 6] == 0x2E
            && Self.isDigit(buffer[versionRange.lowerBound + 7]) {
            let major = buffer[versionRange.lowerBound + 5], minor = buffer[versionRange.lowerBound + 7]
            if major == 0x31 && minor == 0x31 {
                version = .http1_1
            } else if major == 0x31 && minor == 0x30 {
                version = .http1_0
            } else {
                return .failure(HTTP1ParseError(status: 505, message: "HTTP version not supported"))
            }
        } else {
            return .failure(HTTP1ParseError(status: 400, message: "malformed HTTP version"))
        }
        let method = String(decoding: buffer[methodRange], as: UTF8.self)
        var target = String(decoding: buffer[targetRange], as: UTF8.self)
        // origin-form, asterisk-form, or absolute-form (reduced to its path).
        if buffer[targetRange.lowerBound] != 0x2F {
            if target.hasPrefix("http://") || target.hasPrefix("https://") {
                let afterScheme = target.drop { $0 != "/" }.dropFirst(2)
                target = afterScheme.firstIndex(of: "/").map { String(afterScheme[$0...]) } ?? "/"
            } else if !(target == "*" && method == "OPTIONS") {
                return .failure(HTTP1ParseError(status: 400, message: "invalid request target"))
            }
        }

        var headers = HTTPHeaders()
        if lineEnds.count - 1 > limits.maxHeaderCount { return .failure(HTTP1ParseError(status: 431, message: "too many header fields")) }
        headers.fields.reserveCapacity(lineEnds.count - 1)
        var special = Special()
        var lineStart = lineEnds[0] + 2
        for end in lineEnds.dropFirst() {
            switch parseField(lineStart..<end) {
            case .failure(let e): return .failure(e)
            case .success(let (name, value, valueRange)):
                headers.fields.append((name: name, value: value))
                switch name {
                case "host": special.hosts += 1
                case "content-length": special.contentLength.append(valueRange)
                case "transfer-encoding": special.transferEncoding.append(valueRange)
                case "connection": special.connection.append(valueRange)
                case "expect": special.expect = valueRange
                case "upgrade": special.upgrade.append(valueRange)
                case "http2-settings": special.http2Settings += 1
                default: break
                }
            }
            lineStart = end + 2
        }

        // Framing (RFC 9112 §6).
        if version == .http1_1 && special.hosts != 1 {
            return .failure(HTTP1ParseError(status: 400, message: special.hosts == 0 ? "missing Host header" : "multiple Host headers"))
        }
        var framing = Framing.none
        if !special.transferEncoding.isEmpty {
            if version == .http1_0 { return .failure(HTTP1ParseError(status: 400, message: "Transfer-Encoding in an HTTP/1.0 request")) }
            if !special.contentLength.isEmpty { return .failure(HTTP1ParseError(status: 400, message: "both Content-Length and Transfer-Encoding")) }
            let codings = tokens(special.transferEncoding)
            if codings.last != "chunked" || codings.filter({ $0 == "chunked" }).count != 1 {
                return .failure(HTTP1ParseError(status: 400, message: "Transfer-Encoding must end in a single chunked"))
            }
            if codings.count > 1 { return .failure(HTTP1ParseError(status: 501, message: "transfer coding \(codings[0]) not implemented")) }
            framing = .chunked
        } else if !special.contentLength.isEmpty {
            var length: Int? = nil
            for r in special.contentLength {
                var k = r.lowerBound
                while k <= r.upperBound {
                    // One comma-separated element: OWS digits OWS.
                    var e = k
                    while e < r.upperBound && buffer[e] != 0x2C { e += 1 }
                    var a = k, b = e
                    while a < b && (buffer[a] == 0x20 || buffer[a] == 0x09) { a += 1 }
                    while b > a && (buffer[b - 1] == 0x20 || buffer[b - 1] == 0x09) { b -= 1 }
                    guard b > a, b - a <= 18 else { return .failure(HTTP1ParseError(status: 400, message: "invalid Content-Length")) }
                    var n = 0
                    for d in a..<b {
                        guard Self.isDigit(buffer[d]) else { return .failure(HTTP1ParseError(status: 400, message: "invalid Content-Length")) }
                        n = n * 10 + Int(buffer[d] - 0x30)
                    }
                    if let l = length, l != n { return .failure(HTTP1ParseError(status: 400, message: "conflicting Content-Length values")) }
                    length = n
                    k = e + 1
                }
            }
            if length! > limits.maxBodyBytes { return .failure(HTTP1ParseError(status: 413, message: "request body too large")) }
            framing = length! > 0 ? .length(length!) : .none
        } else if version == .http1_0 && (method == "POST" || method == "PUT" || method == "PATCH") {
            // HTTP/1.0 has no chunked coding: a body of unknown length cannot be framed.
            return .failure(HTTP1ParseError(status: 411, message: "Content-Length required"))
        }

        let connection = special.connection.isEmpty ? [] : tokens(special.connection)
        let keepAlive = version == .http1_1 ? !connection.contains("close") : connection.contains("keep-alive")
        let expect = version == .http1_1 && special.expect.map { asciiLowercased($0) == "100-continue" } == true
        var h2c = false
        if case .none = framing, !special.upgrade.isEmpty, special.http2Settings == 1, tokens(special.upgrade).contains("h2c"),
           connection.contains("upgrade"), connection.contains("http2-settings") {
            h2c = true
        }
        let head = HTTP1RequestHead(method: method, target: target, version: version, headers: headers, keepAlive: keepAlive,
                                    expectContinue: expect, upgradeH2C: h2c)
        return .success((head, framing))
    }

    /// Comma-separated tokens of header values, trimmed and lowercased.
    private func tokens(_ ranges: [Range<Int>]) -> [String] {
        var out: [String] = []
        for r in ranges {
            var k = r.lowerBound
            while k < r.upperBound {
                var e = k
                while e < r.upperBound && buffer[e] != 0x2C { e += 1 }
                var a = k, b = e
                while a < b && (buffer[a] == 0x20 || buffer[a] == 0x09) { a += 1 }
                while b > a && (buffer[b - 1] == 0x20 || buffer[b - 1] == 0x09) { b -= 1 }
                out.append(asciiLowercased(a..<b))
                k = e + 1
            }
        }
        return out
    }

    private func asciiLowercased(_ r: Range<Int>) -> String {
        String(unsafeUninitializedCapacity: r.count) { out in
            for (j, k) in r.enumerated() {
                let c = buffer[k]
                out[j] = c >= 0x41 && c <= 0x5A ? c | 0x20 : c
            }
            return r.count
        }
    }

    /// `name ":" OWS value OWS` with a token name and no control characters in the value.
    private func parseField(_ line: Range<Int>) -> Result<(String, String, Range<Int>), HTTP1ParseError> {
        guard let first = line.first else { return .failure(HTTP1ParseError(status: 400, message: "empty header line")) }
        if buffer[first] == 0x20 || buffer[first] == 0x09 { return .failure(HTTP1ParseError(status: 400, message: "obsolete line folding")) }
        var colon = first
        while colon < line.upperBound && buffer[colon] != 0x3A {
            guard Self.isTokenChar(buffer[colon]) else { return .failure(HTTP1ParseError(status: 400, message: "invalid header name")) }
            colon += 1
        }
        guard colon < line.upperBound else { return .failure(HTTP1ParseError(status: 400, message: "header line without a colon")) }
        guard colon > first else { return .failure(HTTP1ParseError(status: 400, message: "invalid header name")) }
        var vs = colon + 1, ve = line.upperBound
        while vs < ve, buffer[vs] == 0x20 || buffer[vs] == 0x09 { vs += 1 }
        while ve > vs, buffer[ve - 1] == 0x20 || buffer[ve - 1] == 0x09 { ve -= 1 }
        for k in vs..<ve {
            let c = buffer[k]
            if c < 0x20 && c != 0x09 || c == 0x7F { return .failure(HTTP1ParseError(status: 400, message: "invalid byte in header value")) }
        }
        return .success((asciiLowercased(first..<colon), String(decoding: buffer[vs..<ve], as: UTF8.self), vs..<ve))
    }

    // MARK: character classes (RFC 9110 §5.6.2)

    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    @inline(__always) static func isVisible(_ c: UInt8) -> Bool { c > 0x20 && c != 0x7F }

    static let tokenTable: [Bool] = (0..<256).map { c in
        if c >= 0x30 && c <= 0x39 || c >= 0x41 && c <= 0x5A || c >= 0x61 && c <= 0x7A { return true }
        return "!#$%&'*+-.^_`|~".utf8.contains(UInt8(c))
    }

    @inline(__always) static func isTokenChar(_ c: UInt8) -> Bool { tokenTable[Int(c)] }

    @inline(__always) static func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case 0x30...0x39: return Int(c - 0x30)
        case 0x41...0x46: return Int(c - 0x41 + 10)
        case 0x61...0x66: return Int(c - 0x61 + 10)
        default: return nil
        }
    }
}
