import ArgumentParser
import Contrail

#if canImport(Glibc)
import Glibc
#endif

/// The serving benchmark: a load generator for Contrail or any server speaking the same protocols.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load-test a serving endpoint and report throughput and latency (TTFT, TPOT, ITL, E2E).",
        discussion: """
        Protocols: grpc (jetstream_proto.Orchestrator/Decode with token_content, like JetStream's \
        benchmark_serving.py), http (jetstream-http POST /generate, streamed), openai (POST /v1/completions \
        with Server-Sent Events, temperature 0, ignore_eos, usage counts from the server). Any server \
        speaking these can be measured (llama.cpp's server, vLLM, JetStream).

        Load: --concurrency N keeps N requests in flight; with --request-rate R, requests arrive as a \
        Poisson process at R/s and at most --concurrency (default 64) are in flight (the rest wait in the \
        client; their latencies start when they are sent). Stops issuing after --requests or --duration \
        (default: 32 requests); requests in flight then finish and count.

        Metrics: TTFT is send → first output. TPOT is the time per output token after the first: \
        (last − first output) / (tokens − 1) per request. benchmark_serving.py folds TTFT into TPOT; \
        this one does not. ITL is the gap between consecutive output chunks; E2E send → end of response. \
        Each as mean, p50, p90, p99. Output tokens are the server's `usage` counts on the OpenAI route, \
        token ids on gRPC, and one per streamed line on /generate.
        """)

    @Option(name: .long, help: "HOST:PORT of the server.") var target = "127.0.0.1:8000"
    @Option(name: .customLong("protocol"), help: "grpc, http or openai.") var api: String = "openai"
    @Option(name: .long, help: "Requests in flight (with --request-rate: the most in flight; default 64 there).") var concurrency: Int?
    @Option(name: .long, help: "Poisson arrivals per second (default: closed loop at --concurrency).") var requestRate: Double?
    @Option(name: .long, help: "Requests to measure.") var requests: Int?
    @Option(name: .long, help: "Seconds to keep issuing requests.") var duration: Double?
    @Option(name: .long, help: "Prompt tokens per request.") var inputLen = 128
    @Option(name: .long, help: "Output tokens per request.") var outputLen = 128
    @Option(name: .long, help: "Sample lengths uniformly within ± this fraction of --input-len/--output-len.") var lengthSpread = 0.0
    @Option(name: .long, help: "JSONL prompts: {\"prompt\": str, \"output_len\": int?} per line (instead of synthetic ones).") var prompts: String?
    @Option(name: .long, help: "Tokenizer or model file to size prompts exactly and for gRPC token ids (default: the SmolLM2 fixture).") var tokenizer: String?
    @Option(name: .long, help: "Requests to run first and discard (default: the concurrency).") var warmup: Int?
    @Option(name: .long, help: "Seed for synthetic prompts (Poisson arrival times are the same in every run).") var seed: UInt64 = 0
    @Option(name: .long, help: "OpenAI `model` field (default: omitted).") var model: String?
    @Option(name: .long, help: "Bearer token sent with every request.") var apiKey: String?
    @Flag(name: .long, help: "Do not send ignore_eos on the OpenAI route (outputs may end early).") var noIgnoreEos = false
    @Option(name: .long, help: "Seconds to wait for a connection or for bytes before failing a request.") var timeout = 300.0
    @Option(name: .long, help: "Write the result as JSON to this file.") var output: String?
    @Flag(name: .long, help: "No progress line.") var quiet = false

    func validate() throws {
        guard BenchTarget.parseAddress(target) != nil else { throw ValidationError("--target must be HOST:PORT, got \"\(target)\"") }
        guard BenchTarget.API(rawValue: api) != nil else { throw ValidationError("--protocol must be grpc, http or openai, got \"\(api)\"") }
        if let c = concurrency, c < 1 || c > 4096 { throw ValidationError("--concurrency must be in 1...4096") }
        if let r = requestRate, !(r > 0 && r.isFinite) { throw ValidationError("--request-rate must be a positive number") }
        if let n = requests, n < 1 { throw ValidationError("--requests must be at least 1") }
        if let d = duration, !(d > 0) { throw ValidationError("--duration must be positive") }
        if inputLen < 1 || outputLen < 1 { throw ValidationError("--input-len and --output-len must be at least 1") }
        if !(0..<1).contains(lengthSpread) { throw ValidationError("--length-spread must be in [0, 1)") }
        if let w = warmup, w < 0 { throw ValidationError("--warmup must not be negative") }
        if !(timeout > 0) { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        try reportingErrors {
            let (host, port) = BenchTarget.parseAddress(target)!
            var t = BenchTarget(host: host, port: port, api: BenchTarget.API(rawValue: api)!)
            t.model = model
            t.apiKey = apiKey
            t.ignoreEOS = !noIgnoreEos
            t.timeoutMs = Int(timeout * 1000)

            var plan = BenchPlan()
            plan.requestRate = requestRate
            plan.concurrency = concurrency ?? (requestRate == nil ? 1 : 64)
            plan.requests = requests ?? (duration == nil ? 32 : nil)
            plan.duration = duration
            plan.warmup = warmup ?? (requestRate == nil ? plan.concurrency : min(plan.concurrency, 4))
            plan.seed = seed
            plan.progress = !quiet

            let tok: Tokenizer?
            let tokenizerPath = tokenizer ?? ModelLocation.defaultModel
            if tokenizer != nil || access(tokenizerPath, R_OK) == 0 {
                tok = try Tokenizer.load(path: tokenizerPath)
            } else {
                tok = nil
            }
            if t.api == .grpc && tok == nil { throw fail("--protocol grpc sends token ids: pass --tokenizer (a model or tokenizer file)") }
            let count = (plan.requests ?? 1024) + plan.warmup
            let list: [BenchPrompt]
            if let prompts {
                do { list = try BenchWorkload.load(path: prompts, defaultOutput: outputLen, tokenizer: tok) } catch let e as BenchWorkloadError { throw fail(e.description) }
            } else {
                list = BenchWorkload.synthetic(count: count, inputLength: inputLen, outputLength: outputLen, spread: lengthSpread,
                                               seed: seed, tokenizer: tok)
            }
            let result = BenchRunner.run(t, prompts: list, plan: plan)
            print(result.table, terminator: "")
            if let output {
                let text = result.json.serialized + "\n"
                guard let f = fopen(output, "w") else { throw fail("\(output): \(String(cString: strerror(errno)))") }
                fputs(text, f)
                fclose(f)
            }
            if result.completed == 0 { throw fail("no request completed (\(result.firstFailure ?? "no requests ran"))") }
        }
    }
}
