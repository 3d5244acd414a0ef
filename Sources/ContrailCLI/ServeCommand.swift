import ArgumentParser
import CShims
import Contrail
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over the JetStream HTTP and gRPC APIs.",
        discussion: """
            With no flags it serves the SmolLM2 fixture. Every port speaks HTTP/1.1, HTTP/2 (h2c) and, with \
            --tls-cert/--tls-key, TLS with ALPN; all routes answer on all ports. The server listens at once and \
            reports not-ready (/healthcheck 503) until the model is loaded and warmed up. SIGTERM flips readiness, \
            lets in-flight requests finish within --shutdown-grace, and exits 0.
            jetstream-pytorch's flags are accepted as aliases: --checkpoint_path, --tokenizer_path, --batch_size, \
            --max_cache_length, --model_name, --quantize_weights, --quantize_kv_cache.
            """)

    // Model
    @Option(name: [.customLong("model"), .customLong("checkpoint_path")], help: "Model file or checkpoint directory (default: the SmolLM2 fixture).")
    var model: String?
    @Option(name: [.customLong("tokenizer"), .customLong("tokenizer_path")], help: "Tokenizer file (default: the one inside the GGUF model).")
    var tokenizer: String?
    @Option(name: [.customLong("model-name"), .customLong("model_name")], help: "Name for logs and the metrics' model_name label (default: the file name).")
    var modelName: String?
    @Option(name: .long, help: "Backend: cpu, or pjrt (a PJRT plugin: libtpu on TPU, the CUDA plugin on NVIDIA GPUs, the XLA CPU plugin).") var backend = "cpu"
    @Option(name: .customLong("pjrt-plugin"), help: "PJRT plugin library for --backend pjrt (default: libtpu.so from the library path).") var pjrtPlugin = "libtpu.so"
    @Option(name: .customLong("pjrt-cpu-devices"), help: .hidden) var pjrtCPUDevices: Int?
    @Flag(name: .customLong("pjrt-disaggregate"), help: "Prefill and decode on different PJRT devices (JetStream's disaggregated serving): prefill on the first group, decode on the next.")
    var pjrtDisaggregate = false
    @Option(name: .customLong("pjrt-tensor-parallel"), help: "PJRT devices each program is partitioned over (weights and KV heads cut among them; a TPU v5e-8 has 8).")
    var pjrtTensorParallel = 1
    @Option(name: .customLong("pjrt-weights"), help: "Weight storage on the PJRT device: bf16, f32, or int8 (per-row scales; also --quantize_weights=True).")
    var pjrtWeights = "bf16"
    @Option(name: .long, help: "Compute threads for the CPU backend (default: one per core).") var threads: Int?
    @Option(name: .customLong("quantize_weights"), help: .hidden) var quantizeWeights: String?
    @Option(name: .customLong("quantize_kv_cache"), help: .hidden) var quantizeKVCache: String?
    @Option(name: .customLong("kv-cache"), help: "KV cache storage: f32, bf16 (half), or int8 with per-token scales (a quarter; also --quantize_kv_cache=True). Default: f32 on the CPU backend, bf16 on PJRT.")
    var kvCache: String?
    @Option(name: .long, help: "What the CPU backend's matrix products read: f32 activations (exact), int8 (fastest; logits move by units, llama.cpp's scheme), or int8x2 (int8 plus the residual: within 0.01 of f32, faster single-stream decode).")
    var activations = ActivationPrecision.f32

    // Scheduling
    @Option(name: [.customLong("batch-size"), .customLong("batch_size")], help: "Decode slots (concurrent generations).")
    var batchSize = 16
    @Option(name: [.customLong("max-cache-length"), .customLong("max_cache_length")], help: "Prompt plus generated tokens per slot.")
    var maxCacheLength = 1024
    @Option(name: .long, help: "Longest prompt, in tokens (default: half the cache length).") var maxPrefillLength: Int?
    @Option(name: .long, help: "Requests accepted beyond the slots; more get 503 / RESOURCE_EXHAUSTED at once.") var maxQueued = 64
    @Option(name: .long, help: "Who goes first when both could run: prefill (lowest time to first token) or decode (steadiest token rate).")
    var priority = "prefill"
    @Option(name: .long, help: "With --priority decode: decode steps after which waiting requests are prefilled anyway.")
    var maxWaitingSteps = 16
    @Option(name: .long, help: "Prefill threads.") var prefillThreads = 1

    @OptionGroup(title: "Default sampling (APIs that carry none, such as JetStream's)") var sampling: SamplingOptions
    @Option(name: .long, help: ArgumentHelp("How JetStream text prompts reach the model: raw (as JetStream), chat (wrapped in the model's chat template as a user message), or auto.",
                                            discussion: "auto: chat for models that ship a chat template, unless the prompt already contains control tokens; raw otherwise."))
    var promptFormat = "auto"

    // Network
    @Option(name: .long, help: "Address to listen on.") var host = "0.0.0.0"
    @Option(name: .long, help: "HTTP port (JetStream's jetstream-http: 8000).") var httpPort = 8000
    @Option(name: .long, help: "gRPC port (JetStream: 9000).") var grpcPort = 9000
    @Option(name: .long, help: "I/O threads (default: one per core).") var ioThreads: Int?
    @Option(name: .long, help: "PEM certificate chain for TLS.") var tlsCert: String?
    @Option(name: .long, help: "PEM private key for TLS.") var tlsKey: String?
    @Option(name: .long, help: "Largest request head (bytes).") var maxHeaderBytes = 16 * 1024
    @Option(name: .long, help: "Largest request body (bytes).") var maxBodyBytes = 8 * 1024 * 1024
    @Option(name: .long, help: "Most open connections.") var maxConnections = 10_000
    @Option(name: .long, help: "Most concurrent HTTP/2 streams per connection.") var maxConcurrentStreams = 256
    @Option(name: .long, help: "Largest gRPC message (bytes).") var grpcMaxMessageBytes = 4 * 1024 * 1024
    @Option(name: .long, help: "Seconds allowed to send a request head.") var headerTimeout = 10.0
    @Option(name: .long, help: "Seconds an idle keep-alive connection stays open.") var idleTimeout = 75.0
    @Option(name: .long, help: "Seconds a connection may make no write progress.") var writeTimeout = 30.0
    @Option(name: .long, help: "Seconds in-flight requests get to finish after SIGTERM.") var shutdownGrace = 30.0
    @Option(name: .long, help: "Bytes of a streamed response buffered for a client that is not reading before its generation is cancelled.")
    var streamBufferBytes = 1 << 20
    @Option(name: .long, help: "An API key clients must send (Authorization: Bearer <key>) to generate; repeatable.")
    var apiKey: [String] = []
    @Option(name: .long, help: "A file of API keys, one per line.") var apiKeyFile: String?
    @Flag(name: .long, help: .hidden) var testServices = false

    func validate() throws {
        for (name, port) in [("--http-port", httpPort), ("--grpc-port", grpcPort)] where !(0...65535).contains(port) {
            throw ValidationError("\(name) \(port) is not a port number")
        }
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if let n = ioThreads, n < 1 { throw ValidationError("--io-threads must be at least 1") }
        if let n = threads, n < 1 { throw ValidationError("--threads must be at least 1") }
        if backend != "cpu" && backend != "pjrt" { throw ValidationError("--backend must be cpu or pjrt, got \(backend)") }
        if pjrtTensorParallel < 1 { throw ValidationError("--pjrt-tensor-parallel must be at least 1") }
        if !["bf16", "f32", "int8"].contains(pjrtWeights) { throw ValidationError("--pjrt-weights must be bf16, f32 or int8, got \(pjrtWeights)") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if maxCacheLength < 2 { throw ValidationError("--max-cache-length must be at least 2") }
        if let p = maxPrefillLength, p < 1 || p >= maxCacheLength {
            throw ValidationError("--max-prefill-length must be between 1 and --max-cache-length - 1 (\(maxCacheLength - 1))")
        }
        if streamBufferBytes < 1024 { throw ValidationError("--stream-buffer-bytes must be at least 1024") }
        if maxQueued < 0 { throw ValidationError("--max-queued must not be negative") }
        if Scheduler.Priority(rawValue: priority) == nil { throw ValidationError("--priority must be prefill or decode") }
        if maxWaitingSteps < 1 { throw ValidationError("--max-waiting-steps must be at least 1") }
        if prefillThreads < 1 { throw ValidationError("--prefill-threads must be at least 1") }
        if GenerationRequest.PromptFormat(rawValue: promptFormat) == nil { throw ValidationError("--prompt-format must be raw, chat or auto") }
        if let q = quantizeWeights, Self.flagValue(q) == nil { throw ValidationError("--quantize_weights expects True or False, got \(q)") }
        if let q = quantizeKVCache {
            guard let on = Self.flagValue(q) else { throw ValidationError("--quantize_kv_cache expects True or False, got \(q)") }
            if on, let kv = kvCache, kv != "int8" { throw ValidationError("--quantize_kv_cache=True asks for an int8 KV cache, --kv-cache for \(kv)") }
        }
        if let kv = kvCache, KVCacheStorage(rawValue: kv) == nil { throw ValidationError("--kv-cache must be f32, bf16 or int8, got \(kv)") }
        if activations == .int8 && backend == "pjrt" { throw ValidationError("--activations int8 is for the CPU backend (PJRT programs compute in the weights' storage type)") }
    }

    /// The KV cache storage asked for, or the backend's default.
    var kvCacheStorage: KVCacheStorage {
        if quantizeKVCache.flatMap(Self.flagValue) == true { return .int8 }
        return kvCache.flatMap(KVCacheStorage.init(rawValue:)) ?? (backend == "pjrt" ? .bf16 : .f32)
    }

    static func flagValue(_ s: String) -> Bool? {
        switch s.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: return nil
        }
    }

    func run() throws {
        let startedAt = contrail_now_ns()
        var config = ServerConfig()
        config.host = host
        config.ports = httpPort == grpcPort ? [httpPort] : [httpPort, grpcPort]
        if let n = ioThreads { config.ioThreads = n }
        config.limits.maxHeaderBytes = maxHeaderBytes
        config.limits.maxBodyBytes = maxBodyBytes
        config.maxConnections = maxConnections
        config.maxConcurrentStreams = maxConcurrentStreams
        config.headerTimeout = headerTimeout
        config.idleTimeout = idleTimeout
        config.writeTimeout = writeTimeout
        config.shutdownGrace = shutdownGrace
        config.responseBufferBytes = streamBufferBytes
        if let cert = tlsCert, let key = tlsKey { config.tls = TLSConfig(certificatePath: cert, keyPath: key) }

        let path = model ?? ModelLocation.defaultModel
        guard access(path, R_OK) == 0 else {
            throw fail("cannot read model \(path)" + (model == nil ? " (run `make fixtures` to download the default model)" : ""))
        }
        let name = modelName ?? String(path.split(separator: "/").last ?? "model")
        let state = ServerState(.starting)
        let service = ModelService(state: state, modelName: name, metrics: Metrics(modelName: name), defaultSampling: sampling.params,
                                   promptFormat: GenerationRequest.PromptFormat(rawValue: promptFormat) ?? .auto)
        var keys = apiKey
        if let file = apiKeyFile {
            let text: String
            do {
                let mapped = try MappedFile(path: file)
                // The mapping must outlive the read of its bytes.
                text = withExtendedLifetime(mapped) { String(decoding: mapped.bytes, as: UTF8.self) }
            } catch {
                throw fail("--api-key-file: \(error)")
            }
            keys += text.split(whereSeparator: \.isNewline).map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
            if keys.isEmpty { throw fail("--api-key-file \(file) holds no keys") }
        }
        let router = Router()
        let grpc = GRPCServer(maxMessageBytes: grpcMaxMessageBytes)
        router.grpc = grpc
        router.apiKeys = APIKeys(keys)
        grpc.apiKeys = APIKeys(keys)
        HealthAPI.install(on: router, grpc: grpc, state: state)
        JetStreamAPI.install(on: router, grpc: grpc, service: service)
        MetricsAPI.install(on: router, service: service)
        OpenAIAPI.install(on: router, service: service)
        TritonAPI.install(on: router, service: service)
        if testServices { TestService.install(on: router, grpc: grpc) }

        let signals = Server.blockTerminationSignals()
        let server: Server
        do {
            server = try Server(config: config, responder: router)
            try server.start()
        } catch {
            throw fail("\(error)")
        }
        let ports = server.boundPorts.map { ":\($0)" }.joined(separator: " and ")
        log("listening on \(host)\(ports) (HTTP/1.1, h2c\(config.tls != nil ? ", TLS" : "")), \(config.ioThreads) I/O threads")

        // Load and warm up off the main thread, which waits for signals; probes answer 503 meanwhile.
        state.set(.loading)
        let loadError = Mutex<String?>(nil)
        let loader = JoinableThread(name: "loader") { [self] in
            do {
                let o = try load(path: path, name: name, service: service, startedAt: startedAt)
                service.attach(o)
                // A SIGTERM during loading wins: stay draining.
                if state.current != .draining { state.set(.ready) }
                service.metrics.setStartupLatency(Double(contrail_now_ns() - startedAt) / 1e9)
                log("ready: serving \(name) (\(o.engine.slotCount) slots, cache \(o.engine.maxCacheLength), prefill ≤ \(o.engine.maxPrefillLength) tokens)")
            } catch {
                loadError.withLock { $0 = "\(error)" }
                log("error: cannot serve \(path): \(error)")
                kill(getpid(), SIGTERM)
            }
        }
        let signal = server.runUntilSignal(signalFd: signals) {
            state.set(.draining)
            service.orchestrator?.drain()
            if loadError.withLock({ $0 }) == nil { log("draining (grace \(Int(shutdownGrace)) s)") }
        }
        loader.join()
        service.orchestrator?.shutdown()
        if let error = loadError.withLock({ $0 }) { throw fail(error) }
        log("\(signal == SIGINT ? "SIGINT" : "SIGTERM"): stopped")
    }

    /// Opens the checkpoint and tokenizer, builds the engine, warms it up and starts the pipeline.
    func load(path: String, name: String, service: ModelService, startedAt: UInt64) throws -> Orchestrator {
        let t0 = contrail_now_ns()
        log("loading \(path)")
        let checkpoint = try Checkpoint.open(path)
        let tok = try Tokenizer.load(path: tokenizer ?? path)
        guard tok.vocabSize <= checkpoint.config.vocabSize else {
            throw ServeError("tokenizer \(tokenizer ?? path) has \(tok.vocabSize) tokens but the model's vocabulary is \(checkpoint.config.vocabSize)")
        }
        let cache = min(maxCacheLength, checkpoint.config.contextLength)
        let prefillLimit = min(maxPrefillLength ?? max(1, cache / 2), cache - 1)
        let engine: any Engine
        if backend == "pjrt" {
            let plugin = try PJRTPlugin.load(pjrtPlugin)
            let client = try PJRTClient(plugin: plugin, cpuDeviceCount: pjrtCPUDevices)
            log("PJRT plugin \(pjrtPlugin) (API \(plugin.apiVersion.major).\(plugin.apiVersion.minor)): \(client.platform), \(client.deviceCount) device(s)")
            let storage = quantizeWeights.flatMap(Self.flagValue) == true ? "int8" : pjrtWeights
            let tp = pjrtTensorParallel, needed = (pjrtDisaggregate ? 2 : 1) * tp
            guard client.deviceCount >= needed else {
                let asked = [pjrtDisaggregate ? "--pjrt-disaggregate" : nil, tp > 1 ? "--pjrt-tensor-parallel \(tp)" : nil].compactMap { $0 }
                throw ServeError("\(asked.joined(separator: " with ")) needs \(needed) devices; the \(client.platform) client has \(client.deviceCount)")
            }
            let prefillDevices = Array(0..<tp), generateDevices = pjrtDisaggregate ? Array(tp..<2 * tp) : prefillDevices
            let p = try PJRTEngine(checkpoint, client: client, slots: batchSize, maxCacheLength: cache, maxPrefillLength: prefillLimit,
                                   weights: storage, kvCache: kvCacheStorage, prefillDevices: prefillDevices, generateDevices: generateDevices)
            if pjrtDisaggregate { log("disaggregated: prefill on devices \(prefillDevices), decode on devices \(generateDevices)") }
            if tp > 1 { log("tensor-parallel over \(tp) devices per group") }
            engine = p
            log("device memory\(tp > 1 ? " per device" : ""): weights \(formatBytes(p.model.weightBytes)) (\(storage)), KV caches \(formatBytes(p.cacheBytes)) (\(kvCacheStorage.rawValue))")
        } else {
            let cpu = try CPUEngine(checkpoint, slots: batchSize, maxCacheLength: cache, maxPrefillLength: prefillLimit,
                                    threads: threads ?? ServerConfig.cores, kvCache: kvCacheStorage, activations: activations)
            engine = cpu
            if kvCacheStorage != .f32 { log("KV caches: \(kvCacheStorage.rawValue)") }
            if activations != .f32 {
                let packed = cpu.packedWeights
                log("matrix products read \(activations.rawValue) activations (\(packed.count) matrices packed for them, \(formatBytes(packed.bytes)))")
            }
        }
        let loadSeconds = Double(contrail_now_ns() - t0) / 1e9
        service.metrics.setModelLoadTime(loadSeconds)
        log("loaded \(checkpoint.config.architecture) in \(format1(loadSeconds)) s (\(checkpoint.config.layerCount) layers, vocabulary \(tok.vocabSize))")
        if promptFormat == "auto" {
            log(tok.hasChatTemplate ? "text prompts: wrapped in the model's \(tok.family.rawValue) chat template (an instruct model; --prompt-format raw sends them as is)"
                                    : "text prompts: raw (the model has no chat template)")
        }
        service.state.set(.warming)
        var serving = ServingConfig()
        serving.maxQueued = maxQueued
        serving.priority = Scheduler.Priority(rawValue: priority) ?? .prefill
        serving.maxWaitingSteps = maxWaitingSteps
        serving.prefillThreads = prefillThreads
        let orchestrator = Orchestrator(engine: engine, tokenizer: tok, config: serving, metrics: service.metrics, log: log)
        let t1 = contrail_now_ns()
        try orchestrator.warmUp()
        log("warmed up in \(format1(Double(contrail_now_ns() - t1) / 1e9)) s (prefill buckets \(orchestrator.buckets.map(String.init).joined(separator: ",")))")
        if let p = engine as? PJRTEngine {
            let c = p.model.compiled
            log("PJRT: compiled \(c.programs) programs (prefill and insert per bucket, the decode step) in \(format1(c.seconds)) s")
        }
        orchestrator.start()
        return orchestrator
    }
}

struct ServeError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Log lines on stderr, prefixed so they stand out among other processes' output.
@Sendable func log(_ message: String) {
    let line = "contrail: \(message)\n"
    line.withCString { _ = write(2, $0, strlen($0)) }
}
