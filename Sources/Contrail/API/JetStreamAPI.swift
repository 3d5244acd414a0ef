import CJetStream

#if canImport(Glibc)
import Glibc
#endif

/// JetStream's generation APIs on the orchestrator: jetstream-http's `POST /generate` and gRPC
/// `jetstream_proto.Orchestrator/Decode`. Neither carries sampling fields, so both use the server default.
public enum JetStreamAPI {
    public static func install(on router: Router, grpc: GRPCServer, service: ModelService) {
        router.add("POST", "/generate", protected: true) { request, writer in generate(request, writer, service) }
        grpc.register("jetstream_proto.Orchestrator", "Decode", protected: true) { call in decode(call, service) }
    }

    // MARK: POST /generate

    /// `{"prompt": str, "max_tokens": int, "stream": bool}`; other fields (session_cache, priority, …) are
    /// accepted and ignored.
    struct GenerateBody {
        var prompt: String
        var maxTokens: Int
        var stream: Bool

        init(_ body: [UInt8]) throws(ServingError) {
            let json: JSON
            do { json = try JSON.parse(body) } catch { throw .invalidRequest("request body is not JSON: \(error)") }
            guard json.object != nil else { throw .invalidRequest("request body must be a JSON object") }
            guard let p = json["prompt"] else { throw .invalidRequest("prompt: field required") }
            guard let prompt = p.string else { throw .invalidRequest("prompt: must be a string") }
            guard let m = json["max_tokens"] else { throw .invalidRequest("max_tokens: field required") }
            guard let maxTokens = m.int else { throw .invalidRequest("max_tokens: must be an integer") }
            guard maxTokens >= 1 else { throw .invalidRequest("max_tokens: must be at least 1, got \(maxTokens)") }
            var stream = false
            if let s = json["stream"], !s.isNull {
                guard let b = s.bool else { throw .invalidRequest("stream: must be a boolean") }
                stream = b
            }
            self.prompt = prompt
            self.maxTokens = maxTokens
            self.stream = stream
        }
    }

    static func generate(_ request: HTTPRequest, _ writer: ResponseWriter, _ service: ModelService) {
        do throws(ServingError) {
            let body = try GenerateBody(request.body)
            let orchestrator = try service.ready()
            var g = GenerationRequest(prompt: .text(body.prompt), maxTokens: body.maxTokens, sampling: service.defaultSampling)
            g.promptFormat = service.promptFormat
            let exchange = HTTPGenerateExchange(writer: writer, stream: body.stream)
            let handle = try orchestrator.submit(g) { exchange.handle($0) }
            exchange.attach(handle, cancelledBy: writer)
        } catch {
            error.respond(writer)
        }
    }

    /// One `/generate` response: the whole text at the end, or (streaming) one JSON object per line as
    /// text is produced.
    final class HTTPGenerateExchange: GenerationExchange, @unchecked Sendable {
        let writer: ResponseWriter
        let stream: Bool
        let id = randomRequestId()
        let created = Int(time(nil))
        // Detokenize thread only.
        private var text = ""
        private var started = false
        private var done = false

        init(writer: ResponseWriter, stream: Bool) {
            self.writer = writer
            self.stream = stream
        }

        func handle(_ event: TokenEvent) {
            guard !done else { return }
            switch event {
            case .tokens(_, let piece, _):
                guard !piece.isEmpty else { return }
                guard stream else {
                    text += piece
                    return
                }
                if !started {
                    started = true
                    writer.start(status: 200, headers: ["content-type": "application/x-ndjson"])
                }
                let line = JSON.object([("id", .string(id)), ("time_created", .number(Double(created))), ("text", .string(piece))])
                if !writer.write(Array((line.serialized + "\n").utf8)) && !writer.isCancelled {
                    // The client stopped reading: its buffered output reached the bound. Give up on it.
                    cancel()
                    end(error: .slowClient(bufferedBytes: writer.bufferedBytes))
                }
            case .finished(let reason, _):
                if reason == .cancelled && writer.isCancelled { return }
                if stream {
                    if !started { writer.start(status: 200, headers: ["content-type": "application/x-ndjson"]) }
                    writer.finish()
                } else {
                    writer.respond(status: 200, json: .object([("response", .string(text))]))
                }
                done = true
            case .failed(let error):
                end(error: error)
            }
        }

        private func end(error: ServingError) {
            done = true
            if started {
                writer.write(Array((JSON.object([("id", .string(id)), ("error", .string(error.description))]).serialized + "\n").utf8))
                writer.finish()
            } else {
                error.respond(writer)
            }
        }
    }

    // MARK: gRPC Decode

    static func decode(_ call: GRPCCall, _ service: ModelService) {
        do throws(ServingError) {
            let g = try decodeRequest(call.message, service)
            let orchestrator = try service.ready()
            let exchange = DecodeExchange(call: call)
            let handle = try orchestrator.submit(g) { exchange.handle($0) }
            exchange.attach(handle, cancelledBy: call.writer)
        } catch {
            call.finish(error.grpcStatus)
        }
    }

    /// A `DecodeRequest` as a `GenerationRequest`: text_content streams text and ids, token_content ids only.
    static func decodeRequest(_ bytes: [UInt8], _ service: ModelService) throws(ServingError) -> GenerationRequest {
        let parsed = bytes.withUnsafeBufferPointer { jetstream_proto__decode_request__unpack(nil, $0.count, $0.baseAddress) }
        guard let parsed else { throw .invalidRequest("malformed DecodeRequest") }
        defer { jetstream_proto__decode_request__free_unpacked(parsed, nil) }
        let r = parsed.pointee
        guard r.max_tokens > 0 else { throw .invalidRequest("max_tokens must be positive, got \(r.max_tokens)") }
        if r.num_samples > 1 {
            throw .unimplemented("num_samples \(r.num_samples) is not supported: one sample per request (send separate requests)")
        }
        if let lora = r.lora_adapter_id, lora.pointee != 0 {
            throw .unimplemented("LoRA adapters are not supported (lora_adapter_id \"\(String(cString: lora))\")")
        }
        var g: GenerationRequest
        switch r.content_case {
        case JETSTREAM_PROTO__DECODE_REQUEST__CONTENT_TEXT_CONTENT:
            guard let tc = r.text_content, let text = tc.pointee.text else { throw .invalidRequest("text_content without text") }
            g = GenerationRequest(prompt: .text(String(cString: text)), maxTokens: Int(r.max_tokens), sampling: service.defaultSampling)
            g.promptFormat = service.promptFormat
        case JETSTREAM_PROTO__DECODE_REQUEST__CONTENT_TOKEN_CONTENT:
            guard let tc = r.token_content else { throw .invalidRequest("token_content without tokens") }
            let ids = Array(UnsafeBufferPointer(start: tc.pointee.token_ids, count: tc.pointee.n_token_ids))
            g = GenerationRequest(prompt: .tokens(ids), maxTokens: Int(r.max_tokens), sampling: service.defaultSampling)
            g.wantsText = false
        default:
            throw .invalidRequest("DecodeRequest has no content: set text_content or token_content")
        }
        g.hasBOS = r.has_bos != 0
        return g
    }

    /// One Decode stream: a DecodeResponse per event (usually one token), then the status.
    final class DecodeExchange: GenerationExchange, @unchecked Sendable {
        let call: GRPCCall

        init(call: GRPCCall) { self.call = call }

        func handle(_ event: TokenEvent) {
            switch event {
            case .tokens(let ids, let text, _):
                if !call.send(JetStreamAPI.encodeDecodeResponse(text: text, ids: ids)) && !call.isCancelled {
                    cancel()
                    call.finish(ServingError.slowClient(bufferedBytes: call.writer.bufferedBytes).grpcStatus)
                }
            case .finished:
                call.finish()
            case .failed(let error):
                call.finish(error.grpcStatus)
            }
        }
    }

    /// `DecodeResponse{stream_content{samples: [{text, token_ids}]}}` packed by protobuf-c.
    static func encodeDecodeResponse(text: String, ids: [Int32]) -> [UInt8] {
        var ids = ids
        return text.withCString { cText in
            ids.withUnsafeMutableBufferPointer { idBuffer in
                var sample = JetstreamProto__DecodeResponse__StreamContent__Sample()
                jetstream_proto__decode_response__stream_content__sample__init(&sample)
                sample.text = UnsafeMutablePointer(mutating: cText)
                sample.n_token_ids = idBuffer.count
                sample.token_ids = idBuffer.baseAddress
                return withUnsafeMutablePointer(to: &sample) { samplePointer in
                    var samples: UnsafeMutablePointer<JetstreamProto__DecodeResponse__StreamContent__Sample>? = samplePointer
                    return withUnsafeMutablePointer(to: &samples) { list in
                        var content = JetstreamProto__DecodeResponse__StreamContent()
                        jetstream_proto__decode_response__stream_content__init(&content)
                        content.n_samples = 1
                        content.samples = list
                        return withUnsafeMutablePointer(to: &content) { contentPointer in
                            var response = JetstreamProto__DecodeResponse()
                            jetstream_proto__decode_response__init(&response)
                            response.content_case = JETSTREAM_PROTO__DECODE_RESPONSE__CONTENT_STREAM_CONTENT
                            response.stream_content = contentPointer
                            var out = [UInt8](repeating: 0, count: jetstream_proto__decode_response__get_packed_size(&response))
                            _ = jetstream_proto__decode_response__pack(&response, &out)
                            return out
                        }
                    }
                }
            }
        }
    }
}
