import CShims

/// One streamed generation over HTTP/1.1 (a connection per request): `/generate` NDJSON lines or
/// `/v1/completions` Server-Sent Events. Each line is timestamped when the read that carried it returns.
struct HTTPBenchClient {
    let target: BenchTarget

    func requestBody(_ prompt: BenchPrompt) -> [UInt8] {
        var fields: [(String, JSON)] = [("prompt", .string(prompt.text)), ("max_tokens", .number(Double(prompt.outputTokens))),
                                        ("stream", .bool(true))]
        if target.api == .openai {
            if let model = target.model { fields.insert(("model", .string(model)), at: 0) }
            fields.append(("temperature", .number(target.temperature)))
            fields.append(("stream_options", .object([("include_usage", .bool(true))])))
            if target.ignoreEOS { fields.append(("ignore_eos", .bool(true))) }
        }
        return Array(JSON.object(fields).serialized.utf8)
    }

    func run(_ prompt: BenchPrompt, _ trace: inout RequestTrace) throws(BenchFailure) {
        let socket = try BenchSocket(host: target.host, port: target.port, timeoutMs: target.timeoutMs)
        let body = requestBody(prompt)
        let path = target.api == .openai ? "/v1/completions" : "/generate"
        var head = "POST \(path) HTTP/1.1\r\nHost: \(target.host):\(target.port)\r\nContent-Type: application/json\r\n"
        head += "Accept: \(target.api == .openai ? "text/event-stream" : "application/x-ndjson")\r\n"
        if let key = target.apiKey { head += "Authorization: Bearer \(key)\r\n" }
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        trace.start = contrail_now_ns()
        try socket.write(Array(head.utf8) + body)

        var response = HTTPResponseReader()
        var lines = LineSplitter()
        var errorBody: [UInt8] = []
        var finished = false
        try response.receive(from: socket) { (status: Int, bytes: UnsafeRawBufferPointer, now: UInt64) throws(BenchFailure) in
            if status != 200 {
                if errorBody.count < 4096 { errorBody += bytes.prefix(4096 - errorBody.count) }
                return
            }
            try lines.feed(bytes) { (line: ArraySlice<UInt8>) throws(BenchFailure) in
                if try handleLine(line, at: now, &trace) { finished = true }
            }
        }
        trace.end = contrail_now_ns()
        guard response.status == 200 else {
            throw .httpStatus(response.status, Self.errorMessage(errorBody))
        }
        if target.api == .openai && !finished { throw .malformed("the event stream ended without data: [DONE]") }
    }

    /// One body line; true at the OpenAI stream's `[DONE]`.
    private func handleLine(_ line: ArraySlice<UInt8>, at time: UInt64, _ trace: inout RequestTrace) throws(BenchFailure) -> Bool {
        var payload = line
        if target.api == .openai {
            guard payload.starts(with: Self.dataPrefix) else { return false }  // comments, event:, blank lines
            payload = payload.dropFirst(Self.dataPrefix.count)
            while payload.first == 0x20 { payload = payload.dropFirst() }
            if payload.elementsEqual(Self.done) { return true }
        }
        guard !payload.isEmpty else { return false }
        let json: JSON
        do { json = try JSON.parse(payload) } catch { throw .malformed("\(error) in \(String(decoding: payload.prefix(200), as: UTF8.self))") }
        if let e = json["error"], !e.isNull {
            throw .streamError(e.string ?? e["message"]?.string ?? e.serialized)
        }
        if target.api == .openai {
            if let usage = json["usage"], !usage.isNull {
                trace.reportedOutputTokens = usage["completion_tokens"]?.int
                trace.reportedPromptTokens = usage["prompt_tokens"]?.int
            }
            if let text = json["choices"]?.array?.first?["text"]?.string, !text.isEmpty {
                trace.chunk(tokens: 1, at: time)
            }
        } else if let text = json["text"]?.string ?? json["response"]?.string, !text.isEmpty {
            trace.chunk(tokens: 1, at: time)
        }
        return false
    }

    static let dataPrefix = Array("data:".utf8)
    static let done = Array("[DONE]".utf8)

    /// The message of a JSON error body (`{"error": …}` in its OpenAI, TGI or plain shapes), else the text.
    static func errorMessage(_ body: [UInt8]) -> String {
        if let json = try? JSON.parse(body) {
            if let m = json["error"]?["message"]?.string ?? json["error"]?.string ?? json["message"]?.string { return m }
        }
        return String(decoding: body.prefix(300), as: UTF8.self)
    }
}

/// Splits a byte stream into lines (LF or CRLF), carrying a partial line between feeds.
struct LineSplitter {
    private var partial: [UInt8] = []

    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ line: (ArraySlice<UInt8>) throws(BenchFailure) -> Void) throws(BenchFailure) {
        var start = 0
        for i in 0..<bytes.count where bytes[i] == 0x0A {
            partial += bytes[start..<i]
            if partial.last == 0x0D { partial.removeLast() }
            try line(partial[...])
            partial.removeAll(keepingCapacity: true)
            start = i + 1
        }
        partial += bytes[start...]
        if partial.count > 16 << 20 { throw .malformed("a line longer than 16 MiB") }
    }
}

/// An incremental HTTP/1.1 response parser: status line and headers, then a body framed by
/// `Transfer-Encoding: chunked`, `Content-Length`, or the end of the connection.
struct HTTPResponseReader {
    private(set) var status = 0
    private(set) var complete = false
    private var head: [UInt8] = []
    private var headDone = false
    private enum Framing { case chunked, length(Int), close }
    private var framing = Framing.close
    private enum ChunkState { case size, data(Int), dataEnd, trailer }
    private var chunk = ChunkState.size
    private var line: [UInt8] = []

    /// Consumes bytes, passing the status and body bytes (de-chunked) to `body`.
    mutating func feed(_ bytes: UnsafeRawBufferPointer, body: (Int, UnsafeRawBufferPointer) throws(BenchFailure) -> Void) throws(BenchFailure) {
        var i = 0
        if !headDone {
            while i < bytes.count && !headDone {
                head.append(bytes[i])
                i += 1
                if head.count >= 4 && head.suffix(4).elementsEqual([0x0D, 0x0A, 0x0D, 0x0A]) { try parseHead() }
                if head.count > 64 << 10 { throw .malformed("response head over 64 KiB") }
            }
            if !headDone { return }
        }
        while i < bytes.count && !complete {
            switch framing {
            case .close:
                try body(self.status, UnsafeRawBufferPointer(rebasing: bytes[i...]))
                i = bytes.count
            case .length(let remaining):
                let n = min(remaining, bytes.count - i)
                try body(self.status, UnsafeRawBufferPointer(rebasing: bytes[i..<i + n]))
                i += n
                framing = .length(remaining - n)
                if remaining - n == 0 { complete = true }
            case .chunked:
                let code = status
                try feedChunked(bytes, &i) { (b: UnsafeRawBufferPointer) throws(BenchFailure) in try body(code, b) }
            }
        }
    }

    /// Reads `socket` until the response is complete, passing each read's status and body bytes with
    /// the time the read returned.
    mutating func receive(from socket: BenchSocket,
                          _ body: (Int, UnsafeRawBufferPointer, UInt64) throws(BenchFailure) -> Void) throws(BenchFailure) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { buffer.deallocate() }
        while !complete {
            let n = try socket.read(into: buffer)
            let now = contrail_now_ns()
            if n == 0 {
                guard endOfStream() else { throw .closed("the server closed the connection mid-response") }
                return
            }
            try feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) { (status: Int, bytes: UnsafeRawBufferPointer) throws(BenchFailure) in
                try body(status, bytes, now)
            }
        }
    }

    /// The connection ended; true if that completes the response.
    mutating func endOfStream() -> Bool {
        if headDone, case .close = framing { complete = true }
        return complete
    }

    private mutating func feedChunked(_ bytes: UnsafeRawBufferPointer, _ i: inout Int,
                                      _ body: (UnsafeRawBufferPointer) throws(BenchFailure) -> Void) throws(BenchFailure) {
        switch chunk {
        case .data(let remaining):
            let n = min(remaining, bytes.count - i)
            try body(UnsafeRawBufferPointer(rebasing: bytes[i..<i + n]))
            i += n
            chunk = remaining - n == 0 ? .dataEnd : .data(remaining - n)
        case .size, .dataEnd, .trailer:
            let b = bytes[i]
            i += 1
            guard b == 0x0A else {
                if b != 0x0D { line.append(b) }
                if line.count > 1024 { throw .malformed("chunk line over 1 KiB") }
                return
            }
            defer { line.removeAll(keepingCapacity: true) }
            switch chunk {
            case .dataEnd:
                guard line.isEmpty else { throw .malformed("chunk data not followed by CRLF") }
                chunk = .size
            case .trailer:
                if line.isEmpty { complete = true }
            default:
                let hex = line.prefix { $0 != 0x3B }  // chunk extensions after ';'
                guard let size = Int(String(decoding: hex, as: UTF8.self).trimmingWhitespace(), radix: 16), size >= 0 else {
                    throw .malformed("bad chunk size line")
                }
                chunk = size == 0 ? .trailer : .data(size)
            }
        }
    }

    private mutating func parseHead() throws(BenchFailure) {
        let text = String(decoding: head, as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: true).makeIterator()
        guard let statusLine = lines.next(), statusLine.hasPrefix("HTTP/1."),
              let code = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw .malformed("bad status line")
        }
        status = code
        headDone = true
        var length: Int?
        var chunked = false
        while let l = lines.next() {
            guard let colon = l.firstIndex(of: ":") else { continue }
            let name = l[..<colon].lowercased()
            let value = String(l[l.index(after: colon)...]).trimmingWhitespace()
            if name == "content-length" { length = Int(value) }
            if name == "transfer-encoding" && value.lowercased().contains("chunked") { chunked = true }
        }
        if status == 204 || status == 304 || (100..<200).contains(status) {
            framing = .length(0)
            complete = true
        } else if chunked {
            framing = .chunked
        } else if let length {
            framing = .length(length)
            if length == 0 { complete = true }
        }
    }
}
