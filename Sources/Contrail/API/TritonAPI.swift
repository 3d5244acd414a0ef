#if canImport(Glibc)
import Glibc
#endif

/// Triton's generate extension and health routes, so clients of a Triton + JetStream setup carry over:
/// `POST /v2/models/{model}/generate` → `{"model_name", "model_version", "text_output"}`,
/// `POST /v2/models/{model}/generate_stream` (Server-Sent Events of the same objects, one per piece),
/// `GET /v2/health/live`, `/v2/health/ready`, `/v2/models/{model}/ready`. Errors: `{"error": "…"}`.
public enum TritonAPI {
    public static func install(on router: Router, service: ModelService) {
        let base = "/v2/models/\(service.modelName)"
        router.add("GET", "/v2/health/live") { _, writer in writer.respond(status: 200) }
        router.add("GET", "/v2/health/ready") { _, writer in writer.respond(status: service.state.isReady ? 200 : 503) }
        router.add("GET", base + "/ready") { _, writer in writer.respond(status: service.state.isReady ? 200 : 503) }
        router.add("POST", base + "/generate", protected: true) { request, writer in generate(request, writer, service, stream: false) }
        router.add("POST", base + "/generate_stream", protected: true) { request, writer in generate(request, writer, service, stream: true) }
    }

    static func fail(_ writer: ResponseWriter, _ status: Int, _ message: String, headers: HTTPHeaders = [:]) {
        writer.respond(status: status, headers: headers, json: .object([("error", .string(message))]))
    }

    /// Inputs and parameters may sit at the top level (Triton's inputs-as-keys form) or under `parameters`.
    static func request(_ body: [UInt8], _ service: ModelService) throws(ServingError) -> GenerationRequest {
        let json: JSON
        do { json = try JSON.parse(body) } catch { throw .invalidRequest("request body is not JSON: \(error)") }
        guard let top = json.object else { throw .invalidRequest("request body must be a JSON object") }
        var fields: [String: JSON] = [:]
        for (k, v) in top { fields[k] = v }
        if let p = json["parameters"] {
            guard let params = p.object else { throw .invalidRequest("parameters must be an object") }
            for (k, v) in params { fields[k] = v }
        }
        guard let text = fields["text_input"]?.string else { throw .invalidRequest("text_input: a string is required") }
        var maxTokens = 16
        if let m = fields["max_tokens"] {
            guard let n = m.int, n >= 1 else { throw .invalidRequest("max_tokens must be a positive integer") }
            maxTokens = n
        }
        var g = GenerationRequest(prompt: .text(text), maxTokens: maxTokens, sampling: service.defaultSampling)
        func float(_ key: String, _ range: ClosedRange<Double>) throws(ServingError) -> Float? {
            guard let v = fields[key], !v.isNull else { return nil }
            guard let d = v.double, range.contains(d) else { throw .invalidRequest("\(key) must be a number in [\(range.lowerBound), \(range.upperBound)]") }
            return Float(d)
        }
        if let t = try float("temperature", 0...2) { g.sampling.temperature = t }
        if let p = try float("top_p", 0...1), p > 0 { g.sampling.topP = p }
        if let k = fields["top_k"], let v = k.int, v >= 0 { g.sampling.topK = v }
        if let s = fields["seed"]?.int { g.sampling.seed = UInt64(bitPattern: Int64(s)) }
        if let r = try float("repetition_penalty", 0.01...10) { g.sampling.repetitionPenalty = r }
        if let stops = fields["stop_words"] ?? fields["stop"] {
            if let one = stops.string {
                g.stopStrings = one.isEmpty ? [] : [one]
            } else if let many = stops.array?.compactMap(\.string) {
                g.stopStrings = many.filter { !$0.isEmpty }
            }
        }
        g.reportStopToken = false
        g.promptFormat = service.promptFormat
        return g
    }

    static func generate(_ http: HTTPRequest, _ writer: ResponseWriter, _ service: ModelService, stream: Bool) {
        do throws(ServingError) {
            let g = try request(http.body, service)
            let orchestrator = try service.ready()
            let exchange = Exchange(writer: writer, model: service.modelName, stream: stream)
            let handle = try orchestrator.submit(g) { exchange.handle($0) }
            exchange.attach(handle, cancelledBy: writer)
        } catch {
            fail(writer, error.httpStatus, error.description, headers: error.httpHeaders)
        }
    }

    final class Exchange: GenerationExchange, @unchecked Sendable {
        let writer: ResponseWriter
        let model: String
        let stream: Bool
        private var text = ""
        private var started = false

        init(writer: ResponseWriter, model: String, stream: Bool) {
            self.writer = writer
            self.model = model
            self.stream = stream
        }

        func object(_ text: String) -> JSON {
            .object([("model_name", .string(model)), ("model_version", .string("1")), ("text_output", .string(text))])
        }

        func handle(_ event: TokenEvent) {
            switch event {
            case .tokens(_, let piece, _):
                guard stream else { text += piece; return }
                guard !piece.isEmpty else { return }
                if !started {
                    started = true
                    writer.start(status: 200, headers: serverSentEventsHeaders)
                }
                if !writer.write(Array("data: \(object(piece).serialized)\n\n".utf8)) && !writer.isCancelled {
                    cancel()
                    writer.finish()
                }
            case .finished(let reason, _):
                if reason == .cancelled && writer.isCancelled { return }
                if stream {
                    if !started { writer.start(status: 200, headers: serverSentEventsHeaders) }
                    writer.finish()
                } else {
                    writer.respond(status: 200, json: object(text))
                }
            case .failed(let e):
                if started {
                    writer.write(Array("data: \(JSON.object([("error", .string(e.description))]).serialized)\n\n".utf8))
                    writer.finish()
                } else {
                    TritonAPI.fail(writer, e.httpStatus, e.description, headers: e.httpHeaders)
                }
            }
        }
    }
}
