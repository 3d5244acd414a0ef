import Testing

@testable import Contrail

#if canImport(Glibc)
import Glibc
#endif

/// One request's events, collected from the detokenize thread.
final class EventLog: @unchecked Sendable {
    private let events = Locked<[TokenEvent]>([])

    func record(_ e: TokenEvent) { events.withLock { $0.append(e) } }
    var all: [TokenEvent] { events.withLock { $0 } }
    var ids: [Int32] { all.flatMap { if case .tokens(let ids, _, _) = $0 { return ids } else { return [] } } }
    var text: String { all.map { if case .tokens(_, let t, _) = $0 { return t } else { return "" } }.joined() }

    var end: TokenEvent? {
        guard let last = all.last else { return nil }
        if case .tokens = last { return nil }
        return last
    }

    var finishReason: FinishReason? { if case .finished(let r, _)? = end { return r } else { return nil } }

    /// Waits (up to `seconds`) for the last event.
    @discardableResult
    func waitForEnd(seconds: Double = 60) -> TokenEvent? {
        var waited = 0.0
        while end == nil && waited < seconds * 1000 {
            usleep(2000)
            waited += 2
        }
        return end
    }
}

@Suite("Orchestrator (SmolLM2 fixture)", .serialized)
struct OrchestratorTests {
    func orchestrator(slots: Int = 16, cache: Int = 128, prefill: Int? = nil, queued: Int = 64,
                      priority: Scheduler.Priority = .prefill) throws -> Orchestrator {
        let path = try Fixtures.path(Fixtures.smol)
        let engine = try CPUEngine(Checkpoint.open(path), slots: slots, maxCacheLength: cache, maxPrefillLength: prefill ?? cache / 2)
        var config = ServingConfig()
        config.maxQueued = queued
        config.priority = priority
        let o = Orchestrator(engine: engine, tokenizer: try Tokenizer.load(path: path), config: config,
                             metrics: Metrics(modelName: "test"))
        try o.warmUp()
        o.start()
        return o
    }

    func prompts(_ n: Int) -> [[Int32]] {
        var g = SeededGenerator(seed: 7)
        return (0..<n).map { i in (0..<(3 + i * 5 % 23)).map { _ in Int32(g.next() % 20_000) + 100 } }
    }

    func submit(_ o: Orchestrator, _ p: [Int32], maxTokens: Int = 12) throws -> (EventLog, RequestHandle) {
        let log = EventLog()
        var r = GenerationRequest(prompt: .tokens(p), maxTokens: maxTokens)
        r.wantsText = false
        let h = try o.submit(r) { log.record($0) }
        return (log, h)
    }

    /// Continuous batching must not change results: 16 prompts decoded together give the greedy ids each
    /// gives alone.
    @Test func batchingDoesNotChangeGreedyTokens() throws {
        let o = try orchestrator()
        defer { o.shutdown() }
        let ps = prompts(16)
        var alone: [[Int32]] = []
        for p in ps {
            let (log, _) = try submit(o, p)
            log.waitForEnd()
            #expect(log.end != nil)
            alone.append(log.ids)
        }
        let logs = try ps.map { try submit(o, $0).0 }
        for (i, log) in logs.enumerated() {
            log.waitForEnd()
            #expect(log.ids == alone[i], "prompt \(i)")
            #expect(log.finishReason == .length || log.finishReason == .stop)
        }
        #expect(slotsEmpty(o))
    }

    /// The generate thread frees slots as it hands the last tokens on, so the gauge may trail the events
    /// by a step.
    func slotsEmpty(_ o: Orchestrator) -> Bool {
        for _ in 0..<5000 where o.gauges().liveSlots != 0 { usleep(1000) }
        return o.gauges().liveSlots == 0
    }

    @Test func chatAnswerEndsWithReportedStopToken() throws {
        let o = try orchestrator()
        defer { o.shutdown() }
        for report in [true, false] {
            let log = EventLog()
            var r = GenerationRequest(prompt: .text("What is the capital of France?"), maxTokens: 30)
            r.promptFormat = .chat
            r.reportStopToken = report
            _ = try o.submit(r) { log.record($0) }
            log.waitForEnd()
            #expect(log.text == "The capital of France is Paris.")
            #expect(log.finishReason == .stop)
            #expect(log.ids.last.map { o.tokenizer.stopIds.contains($0) } == report)
        }
    }

    /// Stop strings end generation where they appear, across token boundaries, and are never sent.
    @Test func stopStrings() throws {
        let o = try orchestrator()
        defer { o.shutdown() }
        // The greedy answer is "The capital of France is Paris."
        for (stops, text) in [(["France is"], "The capital of "), (["Par"], "The capital of France is "),
                              (["The"], ""), (["xyz", "of F"], "The capital "), (["never"], "The capital of France is Paris.")] {
            let log = EventLog()
            var r = GenerationRequest(prompt: .text("What is the capital of France?"), maxTokens: 30)
            r.promptFormat = .chat
            r.stopStrings = stops
            r.reportStopToken = false
            _ = try o.submit(r) { log.record($0) }
            log.waitForEnd()
            #expect(log.text == text, "stops \(stops)")
            #expect(log.finishReason == .stop)
        }
        #expect(slotsEmpty(o))
        #expect(o.metrics.cancelled.current == 0)
    }

    @Test func stopMatcher() {
        #expect(StopMatcher.partialSuffix(of: "hello wor", ["world"]) == 3)
        #expect(StopMatcher.partialSuffix(of: "hello", ["xyz"]) == 0)
        #expect(StopMatcher.partialSuffix(of: "ab", ["abc", "b!"]) == 2)
        #expect(StopMatcher.partialSuffix(of: "café", ["é!"]) == 1)
        let text = "naïve café ☕ done"
        #expect(StopMatcher.firstMatch(in: text, ["☕", "café"]).map { String(text.unicodeScalars[..<$0]) } == "naïve ")
        // A stop that starts inside a grapheme cluster (e + combining acute) still matches.
        let combining = "cafe\u{301} ok"
        #expect(StopMatcher.firstMatch(in: combining, ["\u{301}"]).map { String(combining.unicodeScalars[..<$0]) } == "cafe")
        #expect(StopMatcher.firstMatch(in: text, ["zzz"]) == nil)
    }

    @Test func maxTokensEndsWithLength() throws {
        let o = try orchestrator()
        defer { o.shutdown() }
        for n in [1, 2, 5] {
            let (log, _) = try submit(o, prompts(1)[0], maxTokens: n)
            guard case .finished(.length, let stats)? = log.waitForEnd() else {
                Issue.record("expected finish by length for max_tokens \(n), got \(String(describing: log.end))")
                continue
            }
            #expect(log.ids.count == n)
            #expect(stats.outputTokens == n && stats.promptTokens == prompts(1)[0].count)
        }
    }

    @Test func cancelFreesTheSlot() throws {
        let o = try orchestrator(cache: 256)
        defer { o.shutdown() }
        let (log, handle) = try submit(o, prompts(1)[0], maxTokens: 200)
        while log.ids.count < 3 && log.end == nil { usleep(1000) }
        handle.cancel()
        #expect(log.waitForEnd(seconds: 10) != nil)
        #expect(log.finishReason == .cancelled)
        #expect(log.ids.count < 100)
        #expect(slotsEmpty(o))
        #expect(o.metrics.cancelled.current == 1)
    }

    @Test func overloadIsRefusedAtOnceAndAcceptedRequestsComplete() throws {
        let o = try orchestrator(slots: 1, queued: 2)
        defer { o.shutdown() }
        var accepted: [EventLog] = []
        var refused = 0
        for p in prompts(8) {
            do {
                accepted.append(try submit(o, p, maxTokens: 8).0)
            } catch {
                guard case .overloaded? = error as? ServingError else {
                    Issue.record("expected overloaded, got \(error)")
                    continue
                }
                refused += 1
            }
        }
        #expect(accepted.count == 3 && refused == 5)
        for log in accepted {
            log.waitForEnd()
            #expect(log.finishReason == .length || log.finishReason == .stop)
        }
        #expect(o.metrics.rejected.current == 5)
    }

    @Test func badPromptsAreRejected() throws {
        let o = try orchestrator(cache: 64, prefill: 32)
        defer { o.shutdown() }
        #expect(throws: ServingError.invalidRequest("token id 99999 is outside the vocabulary (0..<49152)")) {
            _ = try submit(o, [1, 99999])
        }
        #expect(throws: ServingError.invalidRequest("the prompt is empty")) { _ = try submit(o, []) }
        #expect(throws: ServingError.invalidRequest("max_tokens must be at least 1, got 0")) { _ = try submit(o, [1], maxTokens: 0) }
        let long = [Int32](repeating: 300, count: 40)
        #expect(throws: ServingError.promptTooLong(tokens: 40, max: 32)) { _ = try submit(o, long) }
        // Asked for, truncation keeps the last 32 tokens.
        let log = EventLog()
        var r = GenerationRequest(prompt: .tokens(long), maxTokens: 2)
        r.truncate = true
        _ = try o.submit(r) { log.record($0) }
        guard case .finished(_, let stats)? = log.waitForEnd() else { Issue.record("truncated request did not finish"); return }
        #expect(stats.promptTokens == 32)
    }

    @Test func drainRefusesNewRequestsAndShutdownEndsInFlightOnes() throws {
        let o = try orchestrator(cache: 256)
        let (log, _) = try submit(o, prompts(1)[0], maxTokens: 200)
        while log.ids.isEmpty { usleep(1000) }
        o.drain()
        #expect(throws: ServingError.unavailable("server is draining")) { _ = try submit(o, [1, 2, 3]) }
        o.shutdown()
        guard case .failed(let e)? = log.end else { Issue.record("in-flight request not ended: \(log.all.count) events"); return }
        #expect(e == .unavailable("server is shutting down"))
    }

    @Test func decodePriorityGivesTheSameTokens() throws {
        let o = try orchestrator(priority: .decode)
        defer { o.shutdown() }
        let ps = prompts(6)
        let logs = try ps.map { try submit(o, $0).0 }
        let reference = try orchestrator()
        defer { reference.shutdown() }
        for (i, log) in logs.enumerated() {
            log.waitForEnd()
            let (alone, _) = try submit(reference, ps[i])
            alone.waitForEnd()
            #expect(log.ids == alone.ids)
        }
    }

    @Test func bucketsArePowersOfTwoUpToTheMaximum() {
        #expect(Orchestrator.buckets(maxPrefillLength: 512) == [16, 32, 64, 128, 256, 512])
        #expect(Orchestrator.buckets(maxPrefillLength: 100) == [16, 32, 64, 100])
        #expect(Orchestrator.buckets(maxPrefillLength: 8) == [8])
    }
}
