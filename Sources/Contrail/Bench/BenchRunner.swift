import CShims

#if canImport(Glibc)
import Glibc
#endif

/// How load is offered: a fixed number of requests in flight (closed loop), or Poisson arrivals at a
/// rate with at most `concurrency` in flight (open loop; arrivals beyond that wait in the client, and
/// their latencies are measured from when they are sent, as vLLM's --max-concurrency does).
public struct BenchPlan: Sendable {
    public var concurrency = 1
    public var requestRate: Double?
    /// Stop issuing after this many requests, or after `duration` seconds, whichever comes first.
    public var requests: Int?
    public var duration: Double?
    /// Requests run before measuring (same concurrency), then discarded.
    public var warmup = 0
    public var seed: UInt64 = 0
    /// A progress line on standard error once a second.
    public var progress = true

    public init() {}
}

/// Runs a plan against a target on client threads (one blocking connection per request in flight).
public enum BenchRunner {
    public static func run(_ target: BenchTarget, prompts: [BenchPrompt], plan: BenchPlan) -> BenchResult {
        precondition(!prompts.isEmpty)
        contrail_ignore_sigpipe()
        if plan.warmup > 0 {
            var warm = plan
            warm.requestRate = nil
            warm.requests = plan.warmup
            warm.duration = nil
            warm.concurrency = min(plan.concurrency, plan.warmup)
            // The last prompts warm up, so no measured prompt is one a server could have cached.
            let state = BenchRun(prompts: prompts, plan: warm, label: "warm-up", offset: max(0, prompts.count - plan.warmup))
            state.execute(target)
        }
        let state = BenchRun(prompts: prompts, plan: plan, label: "bench", offset: 0)
        state.execute(target)
        return state.result(target)
    }
}

/// The shared state of one run: which request goes next, the traces so far.
private final class BenchRun: @unchecked Sendable {
    let prompts: [BenchPrompt]
    let plan: BenchPlan
    let label: String
    /// Request i sends prompt (offset + i) mod count.
    let offset: Int
    private let monitor = Monitor()
    // Guarded by monitor.
    private var issued = 0
    private var traces: [(prompt: Int, trace: RequestTrace)] = []
    private var finishedIssuing = false
    private var pendingArrivals: [Int] = []
    private var startNs: UInt64 = 0
    private var allDone = false

    init(prompts: [BenchPrompt], plan: BenchPlan, label: String, offset: Int) {
        self.offset = offset
        self.prompts = prompts
        self.plan = plan
        self.label = label
    }

    func execute(_ target: BenchTarget) {
        startNs = contrail_now_ns()
        let deadline = plan.duration.map { startNs + UInt64($0 * 1e9) }
        var threads: [JoinableThread] = []
        if let rate = plan.requestRate {
            threads.append(JoinableThread(name: "bench-arrivals") { self.arrivals(rate: rate, deadline: deadline) })
        }
        for i in 0..<max(1, plan.concurrency) {
            threads.append(JoinableThread(name: "bench-\(i)") { self.worker(target, deadline: deadline) })
        }
        let progress = plan.progress ? JoinableThread(name: "bench-progress") { self.reportProgress() } : nil
        for t in threads { t.join() }
        monitor.withLock {
            allDone = true
            monitor.broadcast()
        }
        progress?.join()
    }

    /// Closed loop: take the next request as soon as the previous one ends. Open loop: take the next
    /// arrival the dispatcher has released.
    private func worker(_ target: BenchTarget, deadline: UInt64?) {
        while let i = next(deadline: deadline) {
            let index = (offset + i) % prompts.count
            var trace = RequestTrace()
            do throws(BenchFailure) {
                try target.run(prompts[index], &trace)
            } catch {
                trace.failure = error
                if trace.end == 0 { trace.end = contrail_now_ns() }
            }
            monitor.withLock {
                traces.append((index, trace))
                monitor.broadcast()
            }
        }
    }

    private func next(deadline: UInt64?) -> Int? {
        monitor.withLock {
            if plan.requestRate != nil {
                while pendingArrivals.isEmpty && !finishedIssuing { monitor.wait() }
                return pendingArrivals.isEmpty ? nil : pendingArrivals.removeFirst()
            }
            if let limit = plan.requests, issued >= limit { return nil }
            if let deadline, contrail_now_ns() >= deadline { return nil }
            issued += 1
            return issued - 1
        }
    }

    /// Poisson arrivals: exponential gaps with mean 1/rate from a fixed seed, so every run at a rate
    /// (every server compared) gets the same arrival times whatever its prompts.
    private func arrivals(rate: Double, deadline: UInt64?) {
        var rng = SeededGenerator(seed: 0x5EED)
        var at = Double(startNs)
        var count = 0
        while plan.requests.map({ count < $0 }) ?? true {
            let u = Double.random(in: Double.ulpOfOne..<1, using: &rng)
            at += -log(u) / rate * 1e9
            if let deadline, at >= Double(deadline) { break }
            let now = contrail_now_ns()
            if Double(now) < at { sleepNanos(UInt64(at - Double(now))) }
            monitor.withLock {
                pendingArrivals.append(count)
                issued += 1
                monitor.broadcast()
            }
            count += 1
        }
        monitor.withLock {
            finishedIssuing = true
            monitor.broadcast()
        }
    }

    private func reportProgress() {
        let tty = isatty(2) != 0
        var last = contrail_now_ns()
        var done = false
        while !done {
            monitor.withLock {
                monitor.wait(nanos: 1_000_000_000)
                done = allDone
            }
            let now = contrail_now_ns()
            guard done || now - last >= (tty ? 1_000_000_000 : 10_000_000_000) else { continue }
            last = now
            let (n, failed, tokens) = monitor.withLock {
                (traces.count, traces.count { $0.trace.failure != nil }, traces.reduce(0) { $0 + ($1.trace.failure == nil ? $1.trace.outputTokens : 0) })
            }
            let seconds = Double(now - startNs) / 1e9
            let line = "[\(label)] \(n) done, \(failed) failed, \(format1(Double(tokens) / max(seconds, 1e-9))) output tok/s, \(Int(seconds)) s"
            var text = tty ? "\r\u{1B}[K" + line + (done ? "\n" : "") : line + "\n"
            text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
        }
    }

    func result(_ target: BenchTarget) -> BenchResult {
        monitor.withLock {
            BenchResult(target: target, plan: plan, prompts: prompts, traces: traces, start: startNs)
        }
    }
}

func sleepNanos(_ n: UInt64) {
    var ts = timespec(tv_sec: Int(n / 1_000_000_000), tv_nsec: Int(n % 1_000_000_000))
    var left = timespec()
    while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
}
