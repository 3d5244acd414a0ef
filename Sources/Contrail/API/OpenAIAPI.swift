#if canImport(Glibc)
import Glibc
#endif

/// The OpenAI-compatible API on the orchestrator: `POST /v1/completions`, `POST /v1/chat/completions`
/// (plain JSON or Server-Sent Events) and `GET /v1/models`, with OpenAI's error shape.
public enum OpenAIAPI {
    public static func install(on router: Router, service: ModelService) {
        router.add("GET", "/v1/models", protected: true) { _, writer in
            writer.respond(status: 200, json: .object([
                ("object", .string("list")),
                ("data", .array([.object([("id", .string(service.modelName)), ("object", .string("model")),
                                          ("created", .number(Double(service.created))), ("owned_by", .string("contrail"))])])),
            ]))
        }
        router.add("POST", "/v1/completions", protected: true) { request, writer in handle(request, writer, service, chat: false) }
        router.add("POST", "/tokenize", protected: true) { request, writer in tokenize(request, writer, service) }
        router.add("POST", "/detokenize", protected: true) { request, writer in detokenize(request, writer, service) }
        router.add("POST", "/v1/chat/completions", protected: true) { request, writer in handle(request, writer, service, chat: true) }
    }

    /// vLLM's helper: `{"prompt": str}` or `{"messages": […]}` (chat template applied) → `{"tokens", "count",
    /// "max_model_len"}`. `add_special_tokens` (default true) adds BOS where the tokenizer does.
    static func tokenize(_ request: HTTPRequest, _ writer: ResponseWriter, _ service: ModelService) {
        do throws(APIError) {
            let o = try readyOrchestrator(service)
            let json = try parse(request.body)
            let text: String
            if json["messages"] != nil {
                text = try Parameters.renderMessages(json["messages"], o.tokenizer)
            } else {
                guard let p = json["prompt"]?.string else { throw APIError("`prompt` (a string) or `messages` is required", param: "prompt") }
                text = p
            }
            let addSpecial = json["add_special_tokens"]?.bool ?? true
            let ids = o.tokenizer.encode(text, addBOS: addSpecial ? nil : false)
            writer.respond(status: 200, json: .object([("tokens", .array(ids.map { .number(Double($0)) })),
                                                       ("count", .number(Double(ids.count))),
                                                       ("max_model_len", .number(Double(o.engine.maxCacheLength)))]))
        } catch {
            error.respond(writer)
        }
    }

    /// vLLM's helper: `{"tokens": [int]}` → `{"prompt": str}`.
    static func detokenize(_ request: HTTPRequest, _ writer: ResponseWriter, _ service: ModelService) {
        do throws(APIError) {
            let o = try readyOrchestrator(service)
            let json = try parse(request.body)
            guard let list = json["tokens"]?.array, list.allSatisfy({ $0.int != nil }) else {
                throw APIError("`tokens` must be a list of token ids", param: "tokens")
            }
            let ids = list.compactMap(\.int)
            guard let bad = ids.first(where: { $0 < 0 || $0 >= o.tokenizer.vocabSize }) else {
                writer.respond(status: 200, json: .object([("prompt", .string(o.tokenizer.decode(ids.map { Int32($0) })))]))
                return
            }
            throw APIError("token id \(bad) is outside the vocabulary (0..<\(o.tokenizer.vocabSize))", param: "tokens")
        } catch {
            error.respond(writer)
        }
    }

    static func readyOrchestrator(_ service: ModelService) throws(APIError) -> Orchestrator {
        do throws(ServingError) { return try service.ready() } catch { throw APIError(error) }
    }

    /// The request body as a JSON object.
    static func parse(_ body: [UInt8]) throws(APIError) -> JSON {
        let json: JSON
        do { json = try JSON.parse(body) } catch { throw APIError("the request body is not JSON: \(error)") }
        guard json.object != nil else { throw APIError("the request body must be a JSON object") }
        return json
    }

    /// A request error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
    struct APIError: Error {
        var status = 400
        var message: String
        var param: String? = nil
        var code: String? = nil
        var headers: HTTPHeaders = [:]

        init(_ message: String, param: String? = nil, status: Int = 400, code: String? = nil) {
            self.message = message
            self.param = param
            self.status = status
            self.code = code
        }

        init(_ e: ServingError) {
            self.init(e.description, status: e.httpStatus)
            headers = e.httpHeaders
        }

        var json: JSON {
            let type = status == 401 ? "authentication_error" : status >= 500 ? "server_error" : "invalid_request_error"
            return .object([("error", .object([("message", .string(message)), ("type", .string(type)),
                                               ("param", param.map(JSON.string) ?? .null), ("code", code.map(JSON.string) ?? .null)]))])
        }

        func respond(_ writer: ResponseWriter) { writer.respond(status: status, headers: headers, json: json) }
    }

    /// The fields both endpoints share, checked.
    struct Parameters {
        var prompts: [GenerationRequest.Prompt] = []
        var maxTokens = Int.max
        var sampling = SamplingParams(temperature: 1)
        var seeded = false
        var stop: [String] = []
        var n = 1
        var stream = false
        var includeUsage = false
        var ignoreEOS = false

        /// `json`: an object (see `parse`).
        init(_ json: JSON, chat: Bool, service: ModelService, tokenizer: Tokenizer) throws(APIError) {
            if let m = json["model"], let name = m.string, name != service.modelName {
                throw APIError("The model `\(name)` does not exist (this server serves `\(service.modelName)`)", param: "model",
                               status: 404, code: "model_not_found")
            }
            for unsupported in ["echo", "suffix", "logit_bias", "tools", "functions", "response_format"] {
                if let v = json[unsupported], !v.isNull, v != .bool(false), v != .number(0) {
                    throw APIError("`\(unsupported)` is not supported by this server", param: unsupported)
                }
            }
            if let b = json["best_of"], let n = b.int, n > 1 { throw APIError("`best_of` is not supported by this server", param: "best_of") }
            if chat {
                prompts = [.text(try Self.renderMessages(json["messages"], tokenizer))]
            } else {
                prompts = try Self.prompts(json["prompt"])
                maxTokens = 16  // the completions API's default
            }
            for key in ["max_tokens", "max_completion_tokens"] {
                guard let v = json[key], !v.isNull else { continue }
                guard let n = v.int, n >= 1 else { throw APIError("`\(key)` must be a positive integer", param: key) }
                maxTokens = n
            }
            func number(_ key: String, _ range: ClosedRange<Double>) throws(APIError) -> Float? {
                guard let v = json[key], !v.isNull else { return nil }
                guard let d = v.double, range.contains(d) else {
                    throw APIError("`\(key)` must be a number in [\(range.lowerBound), \(range.upperBound)]", param: key)
                }
                return Float(d)
            }
            if let t = try number("temperature", 0...2) { sampling.temperature = t }
            if let p = try number("top_p", 0...1) {
                guard p > 0 else { throw APIError("`top_p` must be greater than 0", param: "top_p") }
                sampling.topP = p
            }
            if let p = try number("min_p", 0...1) { sampling.minP = p }
            if let p = try number("presence_penalty", -2...2) { sampling.presencePenalty = p }
            if let p = try number("frequency_penalty", -2...2) { sampling.frequencyPenalty = p }
            if let p = try number("repetition_penalty", 0.01...10) { sampling.repetitionPenalty = p }
            if let k = json["top_k"], !k.isNull {
                guard let v = k.int, v >= -1 else { throw APIError("`top_k` must be an integer ≥ -1 (-1 or 0: off)", param: "top_k") }
                sampling.topK = max(0, v)
            }
            if let s = json["seed"], !s.isNull {
                guard let v = s.int else { throw APIError("`seed` must be an integer", param: "seed") }
                sampling.seed = UInt64(bitPattern: Int64(v))
                seeded = true
            }
            if let s = json["stop"], !s.isNull {
                if let one = s.string {
                    stop = [one]
                } else if let many = s.array, many.count <= 16, many.allSatisfy({ $0.string != nil }) {
                    stop = many.compactMap(\.string)
                } else {
                    throw APIError("`stop` must be a string or a list of at most 16 strings", param: "stop")
                }
                stop = stop.filter { !$0.isEmpty }
            }
            // Completions: `logprobs` is a count of alternatives; chat: `logprobs` true plus `top_logprobs`.
            if chat {
                let wanted = json["logprobs"]?.bool ?? false
                if let t = json["top_logprobs"], !t.isNull {
                    guard let k = t.int, (0...20).contains(k) else { throw APIError("`top_logprobs` must be an integer from 0 to 20", param: "top_logprobs") }
                    guard wanted else { throw APIError("`top_logprobs` needs `logprobs: true`", param: "top_logprobs") }
                    sampling.logprobs = k
                } else if wanted {
                    sampling.logprobs = 0
                }
                if let l = json["logprobs"], !l.isNull, l.bool == nil { throw APIError("`logprobs` must be a boolean", param: "logprobs") }
            } else if let l = json["logprobs"], !l.isNull {
                guard let k = l.int, (0...20).contains(k) else { throw APIError("`logprobs` must be an integer from 0 to 20", param: "logprobs") }
                sampling.logprobs = k
            }
            if let v = json["n"], !v.isNull {
                guard let count = v.int, (1...16).contains(count) else { throw APIError("`n` must be an integer from 1 to 16", param: "n") }
                n = count
            }
            func flag(_ key: String) throws(APIError) -> Bool? {
                guard let v = json[key], !v.isNull else { return nil }
                guard let b = v.bool else { throw APIError("`\(key)` must be a boolean", param: key) }
                return b
            }
            if let b = try flag("stream") { stream = b }
            // vLLM's and llama.cpp's extension: generate max_tokens whatever the model says (benchmarks).
            if let b = try flag("ignore_eos") { ignoreEOS = b }
            if let o = json["stream_options"], !o.isNull {
                guard stream else { throw APIError("`stream_options` is only allowed with `stream: true`", param: "stream_options") }
                includeUsage = o["include_usage"]?.bool ?? false
            }
        }

        /// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
        static func prompts(_ v: JSON?) throws(APIError) -> [GenerationRequest.Prompt] {
            guard let v, !v.isNull else { throw APIError("`prompt` is required", param: "prompt") }
            if let s = v.string { return [.text(s)] }
            if let a = v.array, !a.isEmpty {
                if a.allSatisfy({ $0.string != nil }) { return a.compactMap(\.string).map { .text($0) } }
                if a.allSatisfy({ $0.int != nil }) { return [.tokens(a.compactMap(\.int).map { Int32(clamping: $0) })] }
                if a.allSatisfy({ $0.array?.allSatisfy { $0.int != nil } == true }) {
                    return a.map { .tokens($0.array!.compactMap(\.int).map { Int32(clamping: $0) }) }
                }
            }
            throw APIError("`prompt` must be a string, a list of strings, or token ids", param: "prompt")
        }

        /// `messages` in the served model's chat template.
        static func renderMessages(_ v: JSON?, _ tokenizer: Tokenizer) throws(APIError) -> String {
            guard let list = v?.array, !list.isEmpty else { throw APIError("`messages` must be a non-empty list", param: "messages") }
            var messages: [ChatMessage] = []
            for (i, m) in list.enumerated() {
                guard let role = m["role"]?.string, ["system", "user", "assistant", "developer"].contains(role) else {
                    throw APIError("messages[\(i)].role must be system, user, assistant or developer", param: "messages")
                }
                var text: String
                if let s = m["content"]?.string {
                    text = s
                } else if let parts = m["content"]?.array {
                    text = ""
                    for p in parts {
                        guard p["type"]?.string == "text", let t = p["text"]?.string else {
                            throw APIError("messages[\(i)].content: only text parts are supported", param: "messages")
                        }
                        text += t
                    }
                } else {
                    throw APIError("messages[\(i)].content must be a string or a list of text parts", param: "messages")
                }
                messages.append(ChatMessage(role: role == "developer" ? "system" : role, content: text))
            }
            return tokenizer.chatTemplate.render(messages)
        }
    }

    static func handle(_ request: HTTPRequest, _ writer: ResponseWriter, _ service: ModelService, chat: Bool) {
        let orchestrator: Orchestrator
        let params: Parameters
        do throws(APIError) {
            orchestrator = try readyOrchestrator(service)
            params = try Parameters(parse(request.body), chat: chat, service: service, tokenizer: orchestrator.tokenizer)
        } catch {
            return error.respond(writer)
        }
        let exchange = CompletionExchange(writer: writer, chat: chat, model: service.modelName, params: params,
                                          tokenizer: orchestrator.tokenizer)
        var handles: [RequestHandle] = []
        do throws(ServingError) {
            var g = SystemRandomNumberGenerator()
            let base = params.seeded ? params.sampling.seed : g.next()
            for (p, prompt) in params.prompts.enumerated() {
                for i in 0..<params.n {
                    var r = GenerationRequest(prompt: prompt, maxTokens: params.maxTokens, sampling: params.sampling)
                    r.sampling.seed = base &+ UInt64(p * params.n + i)
                    r.stopStrings = params.stop
                    r.reportStopToken = false
                    r.ignoreEOS = params.ignoreEOS
                    let index = p * params.n + i
                    handles.append(try orchestrator.submit(r) { exchange.handle(index, $0) })
                }
            }
        } catch {
            for h in handles { h.cancel() }
            exchange.abandon()
            return APIError(error).respond(writer)
        }
        exchange.attach(handles, cancelledBy: writer)
    }

    /// One completion response: n × prompts choices, gathered (or streamed as SSE chunks) until every
    /// choice has finished. Events arrive on the detokenize thread.
    final class CompletionExchange: @unchecked Sendable {
        let writer: ResponseWriter
        let chat: Bool
        let model: String
        let params: Parameters
        let tokenizer: Tokenizer
        let id: String
        let created = Int(time(nil))
        private struct Choice {
            var text = ""
            var logprobs: [(id: Int32, lp: TokenLogprobs, offset: Int)] = []
            var finish: FinishReason?
            var stats: RequestStats?
            var started = false
        }
        private let state: Locked<(choices: [Choice], handles: [RequestHandle], started: Bool, done: Bool, abandoned: Bool)>

        init(writer: ResponseWriter, chat: Bool, model: String, params: Parameters, tokenizer: Tokenizer) {
            self.tokenizer = tokenizer
            self.writer = writer
            self.chat = chat
            self.model = model
            self.params = params
            id = (chat ? "chatcmpl-" : "cmpl-") + randomRequestId()
            state = Locked(([Choice](repeating: Choice(), count: params.prompts.count * params.n), [], false, false, false))
        }

        func attach(_ handles: [RequestHandle], cancelledBy writer: ResponseWriter) {
            state.withLock { $0.handles = handles }
            writer.onCancel { [weak self] in self?.cancelAll() }
        }

        /// Submission failed part-way: ignore the events of the choices already submitted.
        func abandon() { state.withLock { $0.abandoned = true } }

        func cancelAll() { for h in state.withLock({ $0.handles }) { h.cancel() } }

        var object: String { chat ? (params.stream ? "chat.completion.chunk" : "chat.completion") : "text_completion" }

        func handle(_ index: Int, _ event: TokenEvent) {
            var out: [JSON] = []
            var fail: ServingError?
            var complete = false
            let ok = state.withLock { s -> Bool in
                guard !s.done && !s.abandoned else { return false }
                switch event {
                case .tokens(let ids, let text, let lps):
                    let entries = zip(ids, lps).map { (id: $0, lp: $1, offset: s.choices[index].text.utf8.count) }
                    if params.stream {
                        if chat && !s.choices[index].started {
                            out.append(chunk(index, delta: .object([("role", .string("assistant")), ("content", .string(""))]), finish: nil))
                        }
                        s.choices[index].started = true
                        if !text.isEmpty || !entries.isEmpty {
                            out.append(chunk(index, delta: .string(text), finish: nil, logprobs: entries.isEmpty ? nil : logprobsJSON(entries)))
                        }
                    } else {
                        s.choices[index].logprobs += entries
                    }
                    s.choices[index].text += text
                case .finished(let reason, let stats):
                    s.choices[index].finish = reason
                    s.choices[index].stats = stats
                    if params.stream {
                        if chat && !s.choices[index].started {
                            out.append(chunk(index, delta: .object([("role", .string("assistant")), ("content", .string(""))]), finish: nil))
                        }
                        out.append(chunk(index, delta: nil, finish: reason))
                    }
                    complete = s.choices.allSatisfy { $0.finish != nil }
                    if complete { s.done = true }
                case .failed(let e):
                    fail = e
                    s.done = true
                }
                if params.stream && !s.started && (fail == nil) {
                    s.started = true
                    writer.start(status: 200, headers: serverSentEventsHeaders)
                }
                return true
            }
            guard ok else { return }
            if let fail {
                cancelAll()
                if params.stream && state.withLock({ $0.started }) {
                    send(APIError(fail).json)
                    writer.write(Array("data: [DONE]\n\n".utf8))
                    writer.finish()
                } else {
                    APIError(fail).respond(writer)
                }
                return
            }
            for c in out { send(c) }
            guard complete else { return }
            let choices = state.withLock { $0.choices }
            if choices.contains(where: { $0.finish == .cancelled }) { return }  // the client is gone
            if params.stream {
                if params.includeUsage { send(.object(envelope() + [("choices", .array([])), ("usage", usage(choices))])) }
                writer.write(Array("data: [DONE]\n\n".utf8))
                writer.finish()
            } else {
                let list = choices.enumerated().map { i, c -> JSON in
                    var fields: [(String, JSON)] = [("index", .number(Double(i)))]
                    if chat {
                        fields.append(("message", .object([("role", .string("assistant")), ("content", .string(c.text))])))
                    } else {
                        fields.append(("text", .string(c.text)))
                    }
                    let lp = params.sampling.logprobs == nil ? JSON.null : logprobsJSON(c.logprobs)
                    fields += [("logprobs", lp), ("finish_reason", .string(Self.reason(c.finish)))]
                    return .object(fields)
                }
                writer.respond(status: 200, json: .object(envelope() + [("choices", .array(list)), ("usage", usage(choices))]))
            }
        }

        private func envelope() -> [(String, JSON)] {
            [("id", .string(id)), ("object", .string(object)), ("created", .number(Double(created))), ("model", .string(model))]
        }

        /// Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}`; completions: `{"tokens",
        /// "token_logprobs", "top_logprobs", "text_offset"}`.
        private func logprobsJSON(_ entries: [(id: Int32, lp: TokenLogprobs, offset: Int)]) -> JSON {
            func bytes(_ id: Int32) -> [UInt8] { tokenizer.vocabulary.contains(id) ? tokenizer.vocabulary.bytes(id) : [] }
            func token(_ id: Int32) -> String { String(decoding: bytes(id), as: UTF8.self) }
            if chat {
                return .object([("content", .array(entries.map { e in
                    .object([("token", .string(token(e.id))), ("logprob", .number(Double(e.lp.logprob))),
                             ("bytes", .array(bytes(e.id).map { .number(Double($0)) })),
                             ("top_logprobs", .array(e.lp.top.map { a in
                                 .object([("token", .string(token(a.id))), ("logprob", .number(Double(a.logprob))),
                                          ("bytes", .array(bytes(a.id).map { .number(Double($0)) }))])
                             }))])
                }))])
            }
            return .object([
                ("tokens", .array(entries.map { .string(token($0.id)) })),
                ("token_logprobs", .array(entries.map { .number(Double($0.lp.logprob)) })),
                ("top_logprobs", .array(entries.map { e in .object(e.lp.top.map { (token($0.id), .number(Double($0.logprob))) }) })),
                ("text_offset", .array(entries.map { .number(Double($0.offset)) })),
            ])
        }

        private func chunk(_ index: Int, delta: JSON?, finish: FinishReason?, logprobs: JSON? = nil) -> JSON {
            var choice: [(String, JSON)] = [("index", .number(Double(index)))]
            if chat {
                let d: JSON = delta.map { $0.string != nil ? .object([("content", $0)]) : $0 } ?? .object([])
                choice.append(("delta", d))
            } else {
                choice.append(("text", delta ?? .string("")))
            }
            choice += [("logprobs", logprobs ?? .null), ("finish_reason", finish.map { .string(Self.reason($0)) } ?? .null)]
            return .object(envelope() + [("choices", .array([.object(choice)]))])
        }

        private func usage(_ choices: [Choice]) -> JSON {
            // The prompt counts once per prompt, however many choices it has.
            let prompt = stride(from: 0, to: choices.count, by: params.n).reduce(0) { $0 + (choices[$1].stats?.promptTokens ?? 0) }
            let completion = choices.reduce(0) { $0 + ($1.stats?.outputTokens ?? 0) }
            return .object([("prompt_tokens", .number(Double(prompt))), ("completion_tokens", .number(Double(completion))),
                            ("total_tokens", .number(Double(prompt + completion)))])
        }

        private func send(_ json: JSON) {
            if !writer.write(Array("data: \(json.serialized)\n\n".utf8)) && !writer.isCancelled {
                // The client stopped reading: give up on it rather than buffer without bound.
                cancelAll()
                writer.finish()
            }
        }

        static func reason(_ r: FinishReason?) -> String { r == .length ? "length" : "stop" }
    }
}
