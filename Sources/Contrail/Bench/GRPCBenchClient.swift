import CJetStream
import CNGHTTP2
import CShims

/// One `jetstream_proto.Orchestrator/Decode` call over h2c (prior knowledge), a connection per call,
/// driven by an nghttp2 client session on a blocking socket. The request is a protobuf-c packed
/// `DecodeRequest{token_content, max_tokens}`; each `DecodeResponse` is timestamped on arrival and its
/// token ids counted.
final class GRPCBenchClient {
    let target: BenchTarget
    private var session: OpaquePointer?
    private var request: [UInt8] = []
    private var sent = 0
    private var messages = GRPCMessageReader()
    private var httpStatus = 0
    private var grpcStatus: Int?
    private var grpcMessage = ""
    private var streamClosed = false
    private var resetCode: UInt32 = 0
    private var failure: BenchFailure?
    private var now: UInt64 = 0
    private var trace = RequestTrace()

    init(target: BenchTarget) { self.target = target }

    deinit { if let session { nghttp2_session_del(session) } }

    func run(_ prompt: BenchPrompt, _ result: inout RequestTrace) throws(BenchFailure) {
        guard !prompt.ids.isEmpty else { throw .malformed("gRPC token_content needs token ids (pass a tokenizer)") }
        let socket = try BenchSocket(host: target.host, port: target.port, timeoutMs: target.timeoutMs)
        request = grpcFramed(Self.encodeDecodeRequest(ids: prompt.ids, maxTokens: prompt.outputTokens))
        try startSession()
        trace.start = contrail_now_ns()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { buffer.deallocate() }
        while !streamClosed {
            try flush(socket)
            let n = try socket.read(into: buffer)
            now = contrail_now_ns()
            guard n > 0 else { throw .closed("the server closed the connection before the call ended") }
            let used = nghttp2_session_mem_recv(session, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
            if used < 0 { throw .malformed("HTTP/2: \(String(cString: nghttp2_strerror(Int32(used))))") }
            if let failure { throw failure }
        }
        trace.end = contrail_now_ns()
        result = trace
        if httpStatus != 200 { throw .httpStatus(httpStatus, "gRPC response with HTTP status \(httpStatus)") }
        guard let code = grpcStatus else {
            throw resetCode != 0 ? .closed("stream reset with HTTP/2 error \(resetCode)") : .malformed("no grpc-status trailer")
        }
        if code != 0 { throw .grpcStatus(code, grpcMessage) }
    }

    private func flush(_ socket: BenchSocket) throws(BenchFailure) {
        while true {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 { throw .malformed("HTTP/2: \(String(cString: nghttp2_strerror(Int32(n))))") }
            if n == 0 { return }
            try socket.write(UnsafeRawBufferPointer(start: data, count: n))
        }
    }

    private func startSession() throws(BenchFailure) {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, namelen, value, valuelen, _, user in
            GRPCBenchClient.with(user) { $0.header(String(decoding: UnsafeBufferPointer(start: name, count: namelen), as: UTF8.self),
                                                   String(decoding: UnsafeBufferPointer(start: value, count: valuelen), as: UTF8.self)) }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, _, data, len, user in
            GRPCBenchClient.with(user) { $0.data(UnsafeRawBufferPointer(start: data, count: len)) }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, _, error, user in
            GRPCBenchClient.with(user) { $0.streamClosed = true; $0.resetCode = error }
            return 0
        }
        nghttp2_session_client_new(&session, callbacks, Unmanaged.passUnretained(self).toOpaque())
        var settings = [nghttp2_settings_entry(settings_id: 0x04, value: 1 << 20)]  // INITIAL_WINDOW_SIZE
        nghttp2_submit_settings(session, 0, &settings, settings.count)
        var headers = HTTPHeaders([(":method", "POST"), (":scheme", "http"), (":path", "/jetstream_proto.Orchestrator/Decode"),
                                   (":authority", "\(target.host):\(target.port)"), ("content-type", "application/grpc"),
                                   ("te", "trailers")])
        if let key = target.apiKey { headers.add("authorization", "Bearer \(key)") }
        var provider = nghttp2_data_provider()
        provider.read_callback = { _, _, buf, length, flags, _, user in
            GRPCBenchClient.with(user) { $0.readRequest(buf!, length, flags!) }
        }
        var nv = NVBuilder()  // nghttp2 copies the fields on submit
        let id = nv.build(status: nil, headers) { nva in nghttp2_submit_request(session, nil, nva.baseAddress, nva.count, &provider, nil) }
        if id < 0 { throw .malformed("HTTP/2 submit: \(String(cString: nghttp2_strerror(id)))") }
    }

    @inline(__always)
    private static func with<R>(_ user: UnsafeMutableRawPointer?, _ body: (GRPCBenchClient) -> R) -> R {
        Unmanaged<GRPCBenchClient>.fromOpaque(user!)._withUnsafeGuaranteedRef(body)
    }

    private func readRequest(_ buf: UnsafeMutablePointer<UInt8>, _ length: Int, _ flags: UnsafeMutablePointer<UInt32>) -> Int {
        let n = min(length, request.count - sent)
        request.withUnsafeBufferPointer { src in buf.update(from: src.baseAddress! + sent, count: n) }
        sent += n
        if sent == request.count { flags.pointee |= 0x01 }  // NGHTTP2_DATA_FLAG_EOF
        return n
    }

    private func header(_ name: String, _ value: String) {
        switch name {
        case ":status": httpStatus = Int(value) ?? 0
        case "grpc-status": grpcStatus = Int(value)
        case "grpc-message": grpcMessage = value.removingPercentEncoding
        default: break
        }
    }

    private func data(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        do throws(BenchFailure) {
            try messages.feed(bytes) { (message: [UInt8]) throws(BenchFailure) in
                let ids = try Self.decodeResponseTokens(message)
                // The first DecodeResponse may be initial_content without tokens.
                if ids > 0 { trace.chunk(tokens: ids, at: now) }
            }
        } catch {
            failure = error
        }
    }

    static func encodeDecodeRequest(ids: [Int32], maxTokens: Int) -> [UInt8] {
        var ids = ids
        return ids.withUnsafeMutableBufferPointer { idBuffer in
            var tokens = JetstreamProto__DecodeRequest__TokenContent()
            jetstream_proto__decode_request__token_content__init(&tokens)
            tokens.n_token_ids = idBuffer.count
            tokens.token_ids = idBuffer.baseAddress
            return withUnsafeMutablePointer(to: &tokens) { tokensPointer in
                var request = JetstreamProto__DecodeRequest()
                jetstream_proto__decode_request__init(&request)
                request.max_tokens = Int32(clamping: maxTokens)
                request.content_case = JETSTREAM_PROTO__DECODE_REQUEST__CONTENT_TOKEN_CONTENT
                request.token_content = tokensPointer
                var out = [UInt8](repeating: 0, count: jetstream_proto__decode_request__get_packed_size(&request))
                _ = jetstream_proto__decode_request__pack(&request, &out)
                return out
            }
        }
    }

    /// The number of token ids a `DecodeResponse` carries over all samples.
    static func decodeResponseTokens(_ message: [UInt8]) throws(BenchFailure) -> Int {
        let parsed = message.withUnsafeBufferPointer { jetstream_proto__decode_response__unpack(nil, $0.count, $0.baseAddress) }
        guard let parsed else { throw .malformed("undecodable DecodeResponse") }
        defer { jetstream_proto__decode_response__free_unpacked(parsed, nil) }
        guard parsed.pointee.content_case == JETSTREAM_PROTO__DECODE_RESPONSE__CONTENT_STREAM_CONTENT,
              let content = parsed.pointee.stream_content else { return 0 }
        var count = 0
        for i in 0..<content.pointee.n_samples {
            if let s = content.pointee.samples[i] { count += s.pointee.n_token_ids }
        }
        return count
    }
}

/// Reassembles gRPC length-prefixed messages from DATA chunks.
struct GRPCMessageReader {
    private var buffer: [UInt8] = []

    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ message: ([UInt8]) throws(BenchFailure) -> Void) throws(BenchFailure) {
        buffer += bytes
        var start = 0
        while buffer.count - start >= 5 {
            guard buffer[start] == 0 else { throw .malformed("compressed gRPC message (not requested)") }
            let length = Int(buffer[start + 1]) << 24 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 8 | Int(buffer[start + 4])
            guard length <= 64 << 20 else { throw .malformed("gRPC message of \(length) bytes") }
            guard buffer.count - start - 5 >= length else { break }
            try message(Array(buffer[start + 5..<start + 5 + length]))
            start += 5 + length
        }
        buffer.removeFirst(start)
    }
}

extension String {
    /// gRPC's percent-encoded `grpc-message`, decoded (invalid escapes kept as written).
    var removingPercentEncoding: String {
        var out: [UInt8] = []
        var bytes = Array(utf8)[...]
        while let b = bytes.popFirst() {
            if b == 0x25, bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
