import CShims

#if canImport(Glibc)
import Glibc
#endif

/// A Prometheus histogram with fixed buckets (cumulative on output).
final class Histogram: @unchecked Sendable {
    let name: String
    let help: String
    let bounds: [Double]
    private let lock = Locked((counts: [UInt64](), sum: 0.0, count: UInt64(0)))

    init(_ name: String, _ help: String, buckets: [Double]) {
        self.name = name
        self.help = help
        bounds = buckets
        lock.withLock { $0.counts = [UInt64](repeating: 0, count: buckets.count) }
    }

    func observe(_ value: Double) {
        lock.withLock { h in
            if let i = bounds.firstIndex(where: { value <= $0 }) { h.counts[i] += 1 }
            h.sum += value
            h.count += 1
        }
    }

    func render(into out: inout String, labels: String) {
        let (counts, sum, count) = lock.withLock { ($0.counts, $0.sum, $0.count) }
        out += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var cumulative: UInt64 = 0
        for (i, bound) in bounds.enumerated() {
            cumulative += counts[i]
            out += "\(name)_bucket{\(labels),le=\"\(Metrics.number(bound))\"} \(cumulative)\n"
        }
        out += "\(name)_bucket{\(labels),le=\"+Inf\"} \(count)\n"
        out += "\(name)_sum{\(labels)} \(Metrics.number(sum))\n\(name)_count{\(labels)} \(count)\n"
    }
}

/// A monotonically increasing count.
final class Counter: @unchecked Sendable {
    let name: String
    let help: String
    private let value = Locked(0.0)

    init(_ name: String, _ help: String) {
        self.name = name
        self.help = help
    }

    func add(_ n: Double = 1) { value.withLock { $0 += n } }
    var current: Double { value.withLock { $0 } }
}

/// Tokens per second over the last few whole seconds (a ring of per-second counts).
final class RateMeter: @unchecked Sendable {
    private static let window = 10
    private let state = Locked((second: UInt64(0), counts: [Double](repeating: 0, count: RateMeter.window)))

    func add(_ n: Int, now: UInt64 = contrail_now_ns()) {
        let second = now / 1_000_000_000
        state.withLock { s in
            advance(&s, to: second)
            s.counts[Int(second % UInt64(Self.window))] += Double(n)
        }
    }

    /// Average over the last `window - 1` complete seconds.
    func perSecond(now: UInt64 = contrail_now_ns()) -> Double {
        let second = now / 1_000_000_000
        return state.withLock { s in
            advance(&s, to: second)
            var total = 0.0
            for i in 1..<Self.window { total += s.counts[Int((second &- UInt64(i)) % UInt64(Self.window))] }
            return total / Double(Self.window - 1)
        }
    }

    private func advance(_ s: inout (second: UInt64, counts: [Double]), to second: UInt64) {
        guard second > s.second else { return }
        let steps = min(UInt64(Self.window), second - s.second)
        for i in 1...steps { s.counts[Int((s.second + i) % UInt64(Self.window))] = 0 }
        s.second = second
    }
}

/// JetStream's metric names (so dashboards and HPAs carry over) and Contrail's own, in Prometheus text.
public final class Metrics: @unchecked Sendable {
    /// `id` (the pod's HOSTNAME) and `model_name`, as JetStream labels every series.
    let labels: String

    let timeToFirstToken = Histogram("jetstream_time_to_first_token", "Time to first token per request in seconds",
        buckets: [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0])
    let timePerOutputToken = Histogram("jetstream_time_per_output_token", "Average time per output token per request in seconds",
        buckets: [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5])
    let timePerPrefillToken = Histogram("jetstream_time_per_prefill_token", "Prefill time per token per request in seconds",
        buckets: [0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1])
    let timePerRequest = Histogram("jetstream_time_per_request", "End to end request latency in seconds",
        buckets: [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    let waitTimePerRequest = Histogram("jetstream_wait_time_per_request", "Time each request is not being prefilled or decoded",
        buckets: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
    let queueDuration = Histogram("jetstream_queue_duration", "The total time each request spends enqueued in seconds",
        buckets: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
    let requestInputLength = Histogram("jetstream_request_input_length", "Number of input tokens per request",
        buckets: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768])
    let requestOutputLength = Histogram("jetstream_request_output_length", "Number of output tokens per request",
        buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000,
                  1000000, 2000000])
    let requestSuccess = Counter("jetstream_request_success_count", "Number of requests successfully completed")
    let cancelled = Counter("contrail_requests_cancelled_total", "Requests cancelled by the client (disconnect, reset, gRPC cancel or deadline)")
    let rejected = Counter("contrail_requests_rejected_total", "Requests refused at once because the queue was full")
    let failed = Counter("contrail_requests_failed_total", "Requests that ended with an error after being accepted")
    let promptTokens = Counter("contrail_prompt_tokens_total", "Prompt tokens prefilled")
    let generatedTokens = Counter("contrail_generated_tokens_total", "Tokens generated")
    let decodeSteps = Counter("contrail_decode_steps_total", "Decode steps run over the batch")
    let generationRate = RateMeter()
    private let times = Locked((modelLoad: 0.0, startup: 0.0))

    public init(modelName: String) {
        let host = getenv("HOSTNAME").map { String(cString: $0) } ?? "contrail"
        var l = "id=\"\(Self.escape(host))\""
        // Prometheus label values may hold anything, but JetStream drops names that are not identifiers.
        let model = modelName.replacing("-", with: "_").replacing(".", with: "_")
        if let first = model.unicodeScalars.first, first == "_" || first.properties.isAlphabetic,
           model.unicodeScalars.allSatisfy({ $0 == "_" || $0 == ":" || ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0) }) {
            l += ",model_name=\"\(model)\""
        }
        labels = l
    }

    public func setModelLoadTime(_ seconds: Double) { times.withLock { $0.modelLoad = seconds } }
    public func setStartupLatency(_ seconds: Double) { times.withLock { $0.startup = seconds } }

    /// The live gauges, read from the orchestrator at scrape time.
    struct Gauges {
        var prefillBacklog = 0
        var transferBacklog = 0
        var generateBacklog = 0
        var slotsUsedPercentage = 0.0
        var requestsWaiting = 0
        var kvCacheUtilization = 0.0
        var liveSlots = 0
    }

    func render(_ g: Gauges) -> String {
        var out = ""
        out.reserveCapacity(16 * 1024)
        let idx = labels + ",idx=\"0\""
        func gauge(_ name: String, _ help: String, _ value: Double, _ l: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name){\(l)} \(Self.number(value))\n"
        }
        func counter(_ c: Counter) {
            out += "# HELP \(c.name) \(c.help)\n# TYPE \(c.name) counter\n\(c.name){\(labels)} \(Self.number(c.current))\n"
        }
        let (load, startup) = times.withLock { ($0.modelLoad, $0.startup) }
        gauge("jetstream_prefill_backlog_size", "Size of prefill queue", Double(g.prefillBacklog), labels)
        gauge("jetstream_transfer_backlog_size", "Size of transfer queue", Double(g.transferBacklog), idx)
        gauge("jetstream_generate_backlog_size", "Size of generate queue", Double(g.generateBacklog), idx)
        gauge("jetstream_slots_used_percentage", "The percentage of decode slots currently being used", g.slotsUsedPercentage, idx)
        gauge("jetstream_model_load_time", "Total time taken to load the model", load, labels)
        gauge("jetstream_server_startup_latency", "Total time taken to start the Jetstream server", startup, labels)
        gauge("num_requests_waiting", "Number of requests waiting to be processed for inference.", Double(g.requestsWaiting), labels)
        gauge("kv_cache_utilization_perc", "kv-cache utilization % by the requests under processing.", g.kvCacheUtilization, labels)
        for h in [timeToFirstToken, timePerOutputToken, timePerPrefillToken, timePerRequest, waitTimePerRequest, queueDuration,
                  requestInputLength, requestOutputLength] {
            h.render(into: &out, labels: labels)
        }
        out += "# HELP jetstream_request_success_count_total Number of requests successfully completed\n"
        out += "# TYPE jetstream_request_success_count_total counter\n"
        out += "jetstream_request_success_count_total{\(labels)} \(Self.number(requestSuccess.current))\n"
        for c in [cancelled, rejected, failed, promptTokens, generatedTokens, decodeSteps] { counter(c) }
        gauge("contrail_live_slots", "Decode slots holding a request", Double(g.liveSlots), labels)
        gauge("contrail_generation_tokens_per_second", "Tokens generated per second over the last 9 s", generationRate.perSecond(), labels)
        return out
    }

    static func number(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }

    static func escape(_ s: String) -> String {
        s.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"")
            .replacing("\n", with: "\\n")
    }
}
