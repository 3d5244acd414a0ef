/// The figures of one run: throughput, latency distributions and failures, as a table and as JSON.
///
/// TTFT: send → first output. TPOT: time per output token *after* the first, (last output − first
/// output) / (tokens − 1), per request (benchmark_serving.py divides by all tokens including the first,
/// folding TTFT in). ITL: gap between consecutive output chunks. E2E: send → end of response.
public struct BenchResult: Sendable {
    public struct Distribution: Sendable {
        public var mean = 0.0, p50 = 0.0, p90 = 0.0, p99 = 0.0
        public var count = 0

        init(_ values: [Double]) {
            count = values.count
            guard !values.isEmpty else { return }
            let sorted = values.sorted()
            mean = values.reduce(0, +) / Double(values.count)
            p50 = Self.percentile(sorted, 50)
            p90 = Self.percentile(sorted, 90)
            p99 = Self.percentile(sorted, 99)
        }

        /// Linear interpolation between closest ranks (numpy's default).
        static func percentile(_ sorted: [Double], _ p: Double) -> Double {
            let rank = p / 100 * Double(sorted.count - 1)
            let lo = Int(rank), hi = min(lo + 1, sorted.count - 1)
            return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - Double(lo))
        }

        var json: JSON { .object([("mean", .number(mean)), ("p50", .number(p50)), ("p90", .number(p90)), ("p99", .number(p99))]) }
    }

    public var target: BenchTarget
    public var plan: BenchPlan
    public var completed = 0
    public var failures: [String: Int] = [:]
    public var firstFailure: String?
    public var durationSeconds = 0.0
    public var inputTokens = 0
    public var outputTokens = 0
    public var ttftMs = Distribution([])
    public var tpotMs = Distribution([])
    public var itlMs = Distribution([])
    public var e2eMs = Distribution([])

    public var requestThroughput: Double { Double(completed) / max(durationSeconds, 1e-9) }
    public var outputThroughput: Double { Double(outputTokens) / max(durationSeconds, 1e-9) }
    public var totalThroughput: Double { Double(inputTokens + outputTokens) / max(durationSeconds, 1e-9) }
    public var failed: Int { failures.values.reduce(0, +) }

    init(target: BenchTarget, plan: BenchPlan, prompts: [BenchPrompt], traces: [(prompt: Int, trace: RequestTrace)], start: UInt64) {
        self.target = target
        self.plan = plan
        var ttft: [Double] = [], tpot: [Double] = [], itl: [Double] = [], e2e: [Double] = []
        var end = start
        for (p, t) in traces {
            end = max(end, t.end)
            if let f = t.failure {
                failures[f.kind, default: 0] += 1
                if firstFailure == nil { firstFailure = f.description }
                continue
            }
            completed += 1
            let prompt = prompts[p]
            inputTokens += t.reportedPromptTokens ?? (prompt.ids.isEmpty ? prompt.text.split(separator: " ").count : prompt.ids.count)
            outputTokens += t.outputTokens
            e2e.append(Double(t.end - t.start) / 1e6)
            guard let first = t.chunkTimes.first, let last = t.chunkTimes.last else { continue }
            ttft.append(Double(first - t.start) / 1e6)
            if t.outputTokens > 1 { tpot.append(Double(last - first) / 1e6 / Double(t.outputTokens - 1)) }
            for i in t.chunkTimes.indices.dropFirst() { itl.append(Double(t.chunkTimes[i] - t.chunkTimes[i - 1]) / 1e6) }
        }
        durationSeconds = Double(end - start) / 1e9
        ttftMs = Distribution(ttft)
        tpotMs = Distribution(tpot)
        itlMs = Distribution(itl)
        e2eMs = Distribution(e2e)
    }

    public var json: JSON {
        var config: [(String, JSON)] = [("target", .string("\(target.host):\(target.port)")), ("protocol", .string(target.api.rawValue)),
                                        ("concurrency", .number(Double(plan.concurrency)))]
        config.append(("request_rate", plan.requestRate.map { .number($0) } ?? .null))
        config.append(("requests", plan.requests.map { .number(Double($0)) } ?? .null))
        config.append(("duration", plan.duration.map { .number($0) } ?? .null))
        config.append(("warmup", .number(Double(plan.warmup))))
        return .object([
            ("config", .object(config)),
            ("completed", .number(Double(completed))),
            ("failed", .number(Double(failed))),
            ("failures", .object(failures.sorted { $0.key < $1.key }.map { ($0.key, .number(Double($0.value))) })),
            ("first_failure", firstFailure.map { .string($0) } ?? .null),
            ("duration_s", .number(durationSeconds)),
            ("input_tokens", .number(Double(inputTokens))),
            ("output_tokens", .number(Double(outputTokens))),
            ("request_throughput", .number(requestThroughput)),
            ("output_throughput", .number(outputThroughput)),
            ("total_token_throughput", .number(totalThroughput)),
            ("ttft_ms", ttftMs.json), ("tpot_ms", tpotMs.json), ("itl_ms", itlMs.json), ("e2e_ms", e2eMs.json),
        ])
    }

    private func padded(_ s: String, _ width: Int) -> String { s + String(repeating: " ", count: max(1, width - s.count)) }

    /// The human-readable report.
    public var table: String {
        func row(_ name: String, _ value: String) -> String {
            padded(name, 34) + value + "\n"
        }
        var s = "──── contrail bench: \(target.api.rawValue) \(target.host):\(target.port) ────\n"
        let load = plan.requestRate.map { "Poisson \(format1($0)) req/s, ≤ \(plan.concurrency) in flight" } ?? "\(plan.concurrency) in flight"
        s += row("Load", load)
        s += row("Completed / failed", "\(completed) / \(failed)")
        for (kind, n) in failures.sorted(by: { $0.key < $1.key }) { s += row("  \(kind)", "\(n)") }
        if let firstFailure { s += row("  first failure", firstFailure) }
        s += row("Duration (s)", format2(durationSeconds))
        s += row("Input / output tokens", "\(inputTokens) / \(outputTokens)")
        s += row("Request throughput (req/s)", format2(requestThroughput))
        s += row("Output throughput (tok/s)", format2(outputThroughput))
        s += row("Total throughput (tok/s)", format2(totalThroughput))
        s += "                                  mean      p50      p90      p99\n"
        for (name, d) in [("TTFT (ms)", ttftMs), ("TPOT after first token (ms)", tpotMs), ("ITL (ms)", itlMs), ("E2E latency (ms)", e2eMs)] {
            s += padded(name, 30)
            for v in [d.mean, d.p50, d.p90, d.p99] { s += String(repeating: " ", count: max(1, 9 - format2(v).count)) + format2(v) }
            s += "\n"
        }
        return s
    }
}
