import CShims
import Synchronization

/// Serving knobs (`contrail serve` flags).
public struct ServingConfig: Sendable {
    /// Requests accepted beyond the decode slots; more are refused at once.
    public var maxQueued = 64
    public var priority: Scheduler.Priority = .prefill
    /// Decode priority: decode steps after which waiting requests are prefilled anyway.
    public var maxWaitingSteps = 16
    public var prefillThreads = 1

    public init() {}
}

/// JetStream's driver: prefill thread(s) → transfer thread → generate thread → detokenize thread,
/// joined by bounded queues, with continuous batching over the engine's decode slots. APIs call
/// `submit` and read `TokenEvent`s; the orchestrator knows nothing of HTTP or gRPC.
///
/// The engine is used by one thread at a time: the prefill and generate threads take turns that the
/// `Scheduler` hands out. Stop tokens, `maxTokens` and cancellation are decided by the generate thread
/// itself, so a finished or cancelled request leaves its slot at the very next step.
public final class Orchestrator: @unchecked Sendable {
    public let engine: any Engine
    public let tokenizer: Tokenizer
    public let config: ServingConfig
    public let metrics: Metrics
    /// Prefill lengths prompts are padded to: 16, 32, 64, … and the maximum prefill length.
    public let buckets: [Int]
    private let log: @Sendable (String) -> Void

    private let monitor = Monitor()
    private var scheduler: Scheduler
    private var stopping = false
    private var draining = false
    private var cancelNoted = false

    private let prefillQueue: BoundedQueue<ActiveRequest>
    private let transferQueue: BoundedQueue<ActiveRequest>
    private let generateBacklog: BoundedQueue<ActiveRequest>
    private let detokenizeQueue = BoundedQueue<DetokenizeItem>(capacity: 4096)
    private var threads: [JoinableThread] = []
    private let nextId = Atomic<UInt64>(1)
    /// Tokens held in live slots' caches (for kv_cache_utilization_perc).
    private let cacheTokens = Atomic<Int>(0)

    public init(engine: any Engine, tokenizer: Tokenizer, config: ServingConfig = ServingConfig(), metrics: Metrics,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.engine = engine
        self.tokenizer = tokenizer
        self.config = config
        self.metrics = metrics
        self.log = log
        scheduler = Scheduler(slots: engine.slotCount, maxQueued: config.maxQueued, priority: config.priority,
                              maxWaitingSteps: config.maxWaitingSteps)
        prefillQueue = BoundedQueue(capacity: engine.slotCount + config.maxQueued)
        transferQueue = BoundedQueue(capacity: engine.slotCount)
        generateBacklog = BoundedQueue(capacity: engine.slotCount)
        buckets = Self.buckets(maxPrefillLength: engine.maxPrefillLength)
    }

    static func buckets(maxPrefillLength: Int) -> [Int] {
        var b: [Int] = []
        var n = 16
        while n < maxPrefillLength {
            b.append(n)
            n *= 2
        }
        return b + [maxPrefillLength]
    }

    /// Runs each prefill bucket the engine needs warm (every bucket, and its insert, for shape-compiling
    /// backends; the smallest for the CPU) and a decode step over all slots, before any request arrives.
    public func warmUp() throws {
        var prefix: Prefix?
        for n in engine.compilesPerShape ? buckets : [buckets[0]] {
            let p = try engine.prefill([Int32](repeating: tokenizer.bosId ?? 0, count: n), trueLength: n, sampling: .greedy)
            if engine.compilesPerShape {
                try engine.insert(p, slot: 0)
                engine.free(slot: 0)
            }
            prefix = p
        }
        guard let prefix else { return }
        try engine.prepare()
        for s in 0..<engine.slotCount { try engine.insert(prefix, slot: s) }
        _ = try engine.generate()
        for s in 0..<engine.slotCount { engine.free(slot: s) }
    }

    public func start() {
        for i in 0..<max(1, config.prefillThreads) {
            threads.append(JoinableThread(name: "prefill-\(i)") { [self] in prefillLoop() })
        }
        threads.append(JoinableThread(name: "transfer") { [self] in transferLoop() })
        threads.append(JoinableThread(name: "generate") { [self] in generateLoop() })
        threads.append(JoinableThread(name: "detokenize") { [self] in detokenizeLoop() })
    }

    /// SIGTERM: refuse new requests; accepted ones run to completion.
    public func drain() { monitor.withLock { draining = true } }

    /// Ends every request still in flight (`failed(.unavailable)`) and joins the threads.
    public func shutdown() {
        monitor.withLock {
            stopping = true
            monitor.broadcast()
        }
        prefillQueue.close()
        transferQueue.close()
        generateBacklog.close()
        // The detokenize thread (started last) delivers what the others end, so it stops last.
        for t in threads where t !== threads.last { t.join() }
        detokenizeQueue.close()
        threads.last?.join()
        threads = []
    }

    // MARK: submitting

    /// Validates and queues a request; `onEvent` then receives its token events on the detokenize
    /// thread (keep it quick: format and hand to the connection). Throws at once for bad input,
    /// overload, or a draining server.
    public func submit(_ request: GenerationRequest, onEvent: @escaping @Sendable (TokenEvent) -> Void) throws(ServingError) -> RequestHandle {
        guard request.maxTokens >= 1 else { throw .invalidRequest("max_tokens must be at least 1, got \(request.maxTokens)") }
        var tokens = try promptTokens(request)
        let maxPrompt = min(engine.maxPrefillLength, engine.maxCacheLength - 1)
        if tokens.count > maxPrompt {
            guard request.truncate else { throw .promptTooLong(tokens: tokens.count, max: maxPrompt) }
            // Keep the end of the prompt (the part the answer continues), and BOS when it led.
            let keepBOS = tokens.first == tokenizer.bosId && tokenizer.bosId != nil
            tokens = (keepBOS ? [tokens[0]] : []) + tokens.suffix(maxPrompt - (keepBOS ? 1 : 0))
        }
        // A slot holds prompt + generated tokens; the first generated token needs no cache entry.
        let budget = min(request.maxTokens, engine.maxCacheLength - tokens.count + 1)
        let active = ActiveRequest(id: nextId.wrappingAdd(1, ordering: .relaxed).oldValue, prompt: tokens, maxTokens: budget,
                                   request: request, stopIds: request.ignoreEOS ? request.extraStopIds : tokenizer.stopIds.union(request.extraStopIds),
                                   detokenizer: request.wantsText ? StreamingDetokenizer(tokenizer: tokenizer, skipSpecial: true, atStart: false) : nil,
                                   onEvent: onEvent)
        let refusal: ServingError? = monitor.withLock {
            if stopping || draining { return .unavailable("server is draining") }
            guard scheduler.admit() else { return .overloaded(queued: scheduler.queued) }
            return nil
        }
        if let refusal {
            if case .overloaded = refusal { metrics.rejected.add() }
            throw refusal
        }
        // Admission keeps the queue below its capacity, so this never waits.
        guard prefillQueue.tryPush(active) else {
            monitor.withLock {
                scheduler.dropWaiting()
                monitor.broadcast()
            }
            throw .unavailable("server is shutting down")
        }
        monitor.broadcast()
        return RequestHandle(active, orchestrator: self)
    }

    private func promptTokens(_ request: GenerationRequest) throws(ServingError) -> [Int32] {
        var ids: [Int32]
        switch request.prompt {
        case .text(let text):
            guard !text.isEmpty else { throw .invalidRequest("the prompt is empty") }
            ids = tokenizer.encode(text, addBOS: request.hasBOS ? false : nil)
            if wrapsInChat(request.promptFormat, ids) {
                ids = tokenizer.encode(tokenizer.chatTemplate.render([ChatMessage(role: "user", content: text)]),
                                       addBOS: request.hasBOS ? false : nil)
            }
        case .tokens(let given):
            for t in given where t < 0 || Int(t) >= engine.config.vocabSize {
                throw .invalidRequest("token id \(t) is outside the vocabulary (0..<\(engine.config.vocabSize))")
            }
            ids = given
            if !request.hasBOS, tokenizer.addsBOS, let bos = tokenizer.bosId, ids.first != bos { ids.insert(bos, at: 0) }
        }
        guard !ids.isEmpty else { throw .invalidRequest("the prompt is empty") }
        return ids
    }

    func wrapsInChat(_ format: GenerationRequest.PromptFormat, _ rawIds: [Int32]) -> Bool {
        switch format {
        case .raw: return false
        case .chat: return true
        case .auto: return tokenizer.hasChatTemplate && !rawIds.contains { $0 != tokenizer.bosId && tokenizer.isSpecial($0) }
        }
    }

    // MARK: gauges

    func gauges() -> Metrics.Gauges {
        let s = monitor.withLock { scheduler }
        var g = Metrics.Gauges()
        g.prefillBacklog = s.waiting
        g.transferBacklog = s.inTransfer
        g.generateBacklog = s.ready
        g.requestsWaiting = s.queued
        g.liveSlots = s.live
        g.slotsUsedPercentage = Double(s.live) / Double(s.slots)
        g.kvCacheUtilization = Double(cacheTokens.load(ordering: .relaxed)) / Double(s.slots * engine.maxCacheLength)
        return g
    }

    // MARK: engine turns

    /// Blocks until the scheduler gives `turn` to the caller; false when stopping.
    private func acquire(_ turn: Scheduler.Turn) -> Bool {
        monitor.withLock {
            while !stopping && scheduler.nextTurn != turn { monitor.wait() }
            if stopping { return false }
            scheduler.begin(turn)
            return true
        }
    }

    private enum PrefillGrant { case granted, cancelled, stopping }

    /// Waits for a prefill turn for `r`. While waiting (all slots busy), requests cancelled in the queue
    /// behind it are taken out at once, so clients that gave up do not hold queue places.
    private func acquirePrefill(for r: ActiveRequest) -> PrefillGrant {
        monitor.lock()
        defer { monitor.unlock() }
        while true {
            if stopping { return .stopping }
            if r.isCancelled { return .cancelled }
            if scheduler.nextTurn == .prefill {
                scheduler.begin(.prefill)
                return .granted
            }
            if cancelNoted {
                cancelNoted = false
                monitor.unlock()
                let gone = prefillQueue.removeAll { $0.isCancelled }
                for c in gone { detokenizeQueue.push(.end(c, .cancelled)) }
                monitor.lock()
                for _ in gone { scheduler.dropWaiting() }
                continue
            }
            monitor.wait()
        }
    }

    /// A client cancelled: wake the threads that may be holding its request.
    func noteCancel() {
        monitor.withLock {
            cancelNoted = true
            monitor.broadcast()
        }
    }

    private func updateScheduler(_ change: (inout Scheduler) -> Void) {
        monitor.withLock {
            change(&scheduler)
            monitor.broadcast()
        }
    }

    // MARK: prefill

    private func prefillLoop() {
        while let r = prefillQueue.pop() {
            if r.isCancelled {
                updateScheduler { $0.dropWaiting() }
                detokenizeQueue.push(.end(r, .cancelled))
                continue
            }
            switch acquirePrefill(for: r) {
            case .stopping:
                detokenizeQueue.push(.fail(r, .unavailable("server is shutting down")))
                continue
            case .cancelled:
                updateScheduler { $0.dropWaiting() }
                detokenizeQueue.push(.end(r, .cancelled))
                continue
            case .granted:
                break
            }
            // The scheduler hears of the outcome before the client does, so a client that sees its last
            // token and sends the next request finds the capacity already released.
            if r.isCancelled {
                updateScheduler { $0.endPrefill(transferred: false) }
                detokenizeQueue.push(.end(r, .cancelled))
                continue
            }
            r.prefillStart = contrail_now_ns()
            let bucket = buckets.first { $0 >= r.prompt.count } ?? r.prompt.count
            var padded = r.prompt
            if bucket > padded.count { padded += [Int32](repeating: 0, count: bucket - padded.count) }
            let prefix: Prefix
            do {
                prefix = try engine.prefill(padded, trueLength: r.prompt.count, sampling: r.sampling)
            } catch {
                updateScheduler { $0.endPrefill(transferred: false) }
                detokenizeQueue.push(.fail(r, .engine("\(error)")))
                continue
            }
            r.prefillEnd = contrail_now_ns()
            r.generated = 1
            let first = prefix.firstToken
            let finish: FinishReason? = r.stopIds.contains(first) ? .stop : r.maxTokens <= 1 ? .length : nil
            updateScheduler { $0.endPrefill(transferred: finish == nil) }
            // The first token goes out before the request can reach a slot, so it precedes its step tokens.
            detokenizeQueue.push(.step([StepToken(request: r, token: first, finish: finish, logprobs: prefix.firstLogprobs)]))
            if finish == nil {
                r.prefix = prefix
                if !transferQueue.push(r) { detokenizeQueue.push(.fail(r, .unavailable("server is shutting down"))) }
            }
        }
    }

    // MARK: transfer

    /// A hand-off on one device; where prefill and generate run on different devices this is where the
    /// KV cache would be copied between them.
    private func transferLoop() {
        while let r = transferQueue.pop() {
            // Disaggregated backends move the prefix to the decode device here, off the generate thread.
            // Should it fail, insert retries the move and fails the request with the error.
            if let p = r.prefix { r.prefix = (try? engine.transfer(p)) ?? p }
            guard generateBacklog.push(r) else {
                detokenizeQueue.push(.fail(r, .unavailable("server is shutting down")))
                continue
            }
            updateScheduler { $0.transferred() }
        }
    }

    // MARK: generate

    private func generateLoop() {
        var slots = [ActiveRequest?](repeating: nil, count: engine.slotCount)
        var step: [StepToken] = []
        // Events of this turn, sent once the scheduler knows which slots were freed.
        var out: [DetokenizeItem] = []
        while acquire(.decode) {
            var inserted = 0, freed = 0, steps = 0
            out.removeAll(keepingCapacity: true)
            // Finished prefixes join at this step (continuous batching).
            while let r = generateBacklog.tryPop() {
                inserted += 1
                guard let slot = slots.firstIndex(where: { $0 == nil }), let prefix = r.prefix else {
                    // Cannot happen: a prefill reserves its slot. Fail loudly rather than lose the request.
                    out.append(.fail(r, .engine("no free slot for a prefilled request")))
                    freed += 1
                    continue
                }
                do {
                    try engine.insert(prefix, slot: slot)
                    r.prefix = nil
                    r.insertedAt.store(contrail_now_ns(), ordering: .relaxed)
                    slots[slot] = r
                } catch {
                    out.append(.fail(r, .engine("\(error)")))
                    freed += 1
                }
            }
            // Cancelled requests leave before the step.
            for s in slots.indices {
                guard let r = slots[s], r.isCancelled else { continue }
                engine.free(slot: s)
                slots[s] = nil
                freed += 1
                out.append(.end(r, .cancelled))
            }
            if slots.contains(where: { $0 != nil }) {
                steps = 1
                do {
                    let tokens = try engine.generate()
                    step.removeAll(keepingCapacity: true)
                    for t in tokens {
                        guard let r = slots[t.slot] else { continue }
                        r.generated += 1
                        let finish: FinishReason? = r.stopIds.contains(t.token) ? .stop : r.generated >= r.maxTokens ? .length : nil
                        step.append(StepToken(request: r, token: t.token, finish: finish, logprobs: t.logprobs))
                        if finish != nil {
                            engine.free(slot: t.slot)
                            slots[t.slot] = nil
                            freed += 1
                        }
                    }
                    metrics.decodeSteps.add()
                    out.append(.step(step))
                } catch {
                    log("decode step failed: \(error); failing \(slots.compactMap { $0 }.count) requests")
                    for s in slots.indices {
                        guard let r = slots[s] else { continue }
                        engine.free(slot: s)
                        slots[s] = nil
                        freed += 1
                        out.append(.fail(r, .engine("\(error)")))
                    }
                }
            }
            cacheTokens.store(slots.reduce(0) { $0 + ($1.map { $0.prompt.count + $0.generated } ?? 0) }, ordering: .relaxed)
            updateScheduler { $0.endDecode(inserted: inserted, freed: freed, steps: steps) }
            for item in out { detokenizeQueue.push(item) }
        }
        // Stopping: whatever is still in a slot ends here.
        for s in slots.indices {
            guard let r = slots[s] else { continue }
            engine.free(slot: s)
            detokenizeQueue.push(.fail(r, .unavailable("server is shutting down")))
        }
        while let r = generateBacklog.tryPop() { detokenizeQueue.push(.fail(r, .unavailable("server is shutting down"))) }
    }

    // MARK: detokenize

    private func detokenizeLoop() {
        while let item = detokenizeQueue.pop() {
            switch item {
            case .step(let tokens):
                var generated = 0
                for t in tokens {
                    if t.request.finished { continue }
                    generated += 1
                    deliver(t)
                }
                metrics.generatedTokens.add(Double(generated))
                metrics.generationRate.add(generated)
            case .end(let r, let reason):
                finish(r, reason)
            case .fail(let r, let error):
                guard !r.finished else { continue }
                r.finished = true
                metrics.failed.add()
                log("request id=\(r.id) failed: \(error)")
                r.end(.failed(error))
            }
        }
    }

    private func deliver(_ t: StepToken) {
        let r = t.request
        let now = contrail_now_ns()
        if r.firstTokenAt == 0 { r.firstTokenAt = now }
        r.lastTokenAt = now
        r.outputTokens += 1
        let isStop = t.finish == .stop
        if isStop {
            if r.request.reportStopToken { r.hold(t) }
        } else if var d = r.detokenizer {
            let text = d.push(t.token)
            r.detokenizer = d
            r.hold(t)
            r.heldText += text
            // Hold ids whose bytes end mid-character; they go out with the id that completes the text.
            if !d.hasPending && emitHeld(r, final: false) { return }
        } else {
            r.onEvent(.tokens([t.token], text: "", logprobs: t.logprobs.map { [$0] } ?? []))
        }
        if let reason = t.finish { finish(r, reason) }
    }

    /// Sends the held ids and text, except a tail that may be the start of a stop string (unless `final`).
    /// A stop string found in the text ends the request there: the text before it goes out, the stop
    /// string and everything after it never do. Returns true when it ended the request.
    private func emitHeld(_ r: ActiveRequest, final: Bool) -> Bool {
        let stops = r.request.stopStrings
        if !stops.isEmpty, let cut = StopMatcher.firstMatch(in: r.heldText, stops) {
            let before = String(r.heldText.unicodeScalars[..<cut])
            if !before.isEmpty || !r.heldIds.isEmpty { r.onEvent(.tokens(r.heldIds, text: before, logprobs: r.heldLogprobs)) }
            r.heldIds.removeAll()
            r.heldLogprobs.removeAll()
            r.heldText = ""
            // The generate thread frees the slot at its next step; the tokens it may still make are dropped.
            r.cancel()
            finish(r, .stop)
            return true
        }
        let keep = final || stops.isEmpty ? 0 : StopMatcher.partialSuffix(of: r.heldText, stops)
        guard !r.heldIds.isEmpty || r.heldText.unicodeScalars.count > keep else { return false }
        let scalars = r.heldText.unicodeScalars
        let split = scalars.index(scalars.endIndex, offsetBy: -keep)
        r.onEvent(.tokens(r.heldIds, text: String(scalars[..<split]), logprobs: r.heldLogprobs))
        r.heldIds.removeAll(keepingCapacity: true)
        r.heldLogprobs.removeAll(keepingCapacity: true)
        r.heldText = String(scalars[split...])
        return false
    }

    private func finish(_ r: ActiveRequest, _ reason: FinishReason) {
        guard !r.finished else { return }
        if var d = r.detokenizer { r.heldText += d.finish(); r.detokenizer = d }
        if emitHeld(r, final: true) { return }
        r.finished = true
        let stats = r.stats(now: contrail_now_ns())
        switch reason {
        case .cancelled: metrics.cancelled.add()
        case .stop, .length:
            metrics.requestSuccess.add()
            metrics.timeToFirstToken.observe(stats.timeToFirstToken)
            metrics.timePerRequest.observe(stats.totalSeconds)
            metrics.waitTimePerRequest.observe(stats.waitSeconds)
            metrics.queueDuration.observe(stats.queueSeconds)
            metrics.requestInputLength.observe(Double(stats.promptTokens))
            metrics.requestOutputLength.observe(Double(stats.outputTokens))
            metrics.promptTokens.add(Double(stats.promptTokens))
            if stats.promptTokens > 0 { metrics.timePerPrefillToken.observe(stats.prefillSeconds / Double(stats.promptTokens)) }
            if stats.outputTokens > 1 {
                metrics.timePerOutputToken.observe(Double(r.lastTokenAt - r.firstTokenAt) / 1e9 / Double(stats.outputTokens - 1))
            }
        }
        log("request id=\(r.id) finish=\(reason.rawValue) prompt_tokens=\(stats.promptTokens) output_tokens=\(stats.outputTokens)"
            + " queue_ms=\(format1(stats.queueSeconds * 1000)) ttft_ms=\(format1(stats.timeToFirstToken * 1000))"
            + " total_ms=\(format1(stats.totalSeconds * 1000))")
        r.end(.finished(reason, stats))
    }
}

/// One generated token on its way to the detokenize thread; `finish` is set on a request's last token.
struct StepToken {
    let request: ActiveRequest
    let token: Int32
    let finish: FinishReason?
    var logprobs: TokenLogprobs? = nil
}

enum DetokenizeItem {
    /// Tokens of one decode step (or a prefill's first token), in slot order.
    case step([StepToken])
    /// Ended without a token (cancelled before or between steps).
    case end(ActiveRequest, FinishReason)
    case fail(ActiveRequest, ServingError)
}

/// A request inside the pipeline. Each field is owned by one stage at a time; the queues between the
/// threads order the hand-offs. Only the cancel flag is shared.
final class ActiveRequest: @unchecked Sendable {
    let id: UInt64
    let prompt: [Int32]
    let maxTokens: Int
    let request: GenerationRequest
    let stopIds: Set<Int32>
    /// Dropped after the last event: it usually holds the response writer, which holds this request's
    /// handle for cancellation, and the cycle must not outlive the request.
    private(set) var onEvent: @Sendable (TokenEvent) -> Void
    let submitted = contrail_now_ns()
    private let cancelled = Atomic<Bool>(false)
    var sampling: SamplingParams { request.sampling }

    // prefill → generate
    var prefix: Prefix?
    var generated = 0
    var prefillStart: UInt64 = 0
    var prefillEnd: UInt64 = 0
    /// Written by the generate thread, read by the detokenize thread (which may end a request by a stop
    /// string while it is still on its way to a slot).
    let insertedAt = Atomic<UInt64>(0)
    // detokenize
    var detokenizer: StreamingDetokenizer?
    var heldIds: [Int32] = []
    var heldLogprobs: [TokenLogprobs] = []
    var heldText = ""
    var outputTokens = 0
    var firstTokenAt: UInt64 = 0
    var lastTokenAt: UInt64 = 0
    var finished = false

    init(id: UInt64, prompt: [Int32], maxTokens: Int, request: GenerationRequest, stopIds: Set<Int32>,
         detokenizer: StreamingDetokenizer?, onEvent: @escaping @Sendable (TokenEvent) -> Void) {
        self.id = id
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.request = request
        self.stopIds = stopIds
        self.detokenizer = detokenizer
        self.onEvent = onEvent
    }

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    func cancel() { cancelled.store(true, ordering: .relaxed) }

    /// Keeps a token (and its log-probabilities) until its text can go out.
    func hold(_ t: StepToken) {
        heldIds.append(t.token)
        if let lp = t.logprobs { heldLogprobs.append(lp) }
    }

    /// The last event.
    func end(_ event: TokenEvent) {
        onEvent(event)
        onEvent = { _ in }
    }

    func stats(now: UInt64) -> RequestStats {
        func seconds(_ a: UInt64, _ b: UInt64) -> Double { b > a && a > 0 ? Double(b - a) / 1e9 : 0 }
        var s = RequestStats()
        s.promptTokens = prompt.count
        s.outputTokens = outputTokens
        s.queueSeconds = seconds(submitted, prefillStart)
        s.prefillSeconds = seconds(prefillStart, prefillEnd)
        s.timeToFirstToken = seconds(submitted, firstTokenAt)
        s.totalSeconds = seconds(submitted, now)
        s.waitSeconds = s.queueSeconds + seconds(prefillEnd, insertedAt.load(ordering: .relaxed))
        return s
    }
}
