import CKernels
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Persistent worker threads for splitting one operation across cores (no thread creation per op).
/// `run` calls `body(0..<threads)` concurrently, the caller taking part 0, and returns when all finish.
///
/// A decode step dispatches ~8 operations per layer, a few hundred per token, each lasting tens of
/// microseconds; waking a sleeping thread through a condition variable costs about as much. So workers
/// spin on the job counter for a while after each job (and the caller spins for stragglers), and only
/// sleep after `spinNanos` without work — between requests, not between the operations of a step.
final class ThreadPool: @unchecked Sendable {
    let threads: Int
    /// How long an idle worker spins before sleeping.
    static let spinNanos: UInt64 = 2_000_000
    private let generation = Atomic<UInt64>(0)
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    /// Written by the caller before `generation` is released, read by workers after they acquire it.
    private var job: ((Int) -> Void)?
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var workers: [pthread_t] = []

    init(threads: Int) {
        self.threads = max(1, threads)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        for i in 1..<self.threads {
            var t = pthread_t()
            let context = Unmanaged.passRetained(WorkerContext(pool: self, index: i))
            pthread_create(&t, nil, { arg in
                let c = Unmanaged<WorkerContext>.fromOpaque(arg!).takeRetainedValue()
                c.pool.work(c.index)
                return nil
            }, context.toOpaque())
            workers.append(t)
        }
    }

    private final class WorkerContext {
        unowned let pool: ThreadPool
        let index: Int
        init(pool: ThreadPool, index: Int) {
            self.pool = pool
            self.index = index
        }
    }

    deinit {
        stopping.store(true, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        for t in workers { pthread_join(t, nil) }
        pthread_cond_destroy(wake)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        wake.deallocate()
    }

    private func work(_ index: Int) {
        var seen: UInt64 = 0
        while true {
            guard let next = waitForJob(after: seen) else { return }
            seen = next
            job!(index)
            pending.subtract(1, ordering: .releasing)
        }
    }

    /// The next generation once it differs from `seen`; nil when stopping.
    private func waitForJob(after seen: UInt64) -> UInt64? {
        var spins = 0
        var since: UInt64 = 0
        while true {
            let g = generation.load(ordering: .acquiring)
            if g != seen { return g }
            if stopping.load(ordering: .relaxed) { return nil }
            spins += 1
            if spins & 255 != 0 {
                ck_cpu_relax()
                continue
            }
            let now = monotonicNanos()
            if since == 0 { since = now }
            guard now - since >= Self.spinNanos else { continue }
            // Sleep. The sleeper count is raised before the last check, and the caller bumps the
            // generation before reading the count (both sequentially consistent), so either the check
            // sees the new job or the caller sees a sleeper and broadcasts under the mutex.
            pthread_mutex_lock(mutex)
            sleepers.add(1, ordering: .sequentiallyConsistent)
            while generation.load(ordering: .sequentiallyConsistent) == seen && !stopping.load(ordering: .sequentiallyConsistent) {
                pthread_cond_wait(wake, mutex)
            }
            sleepers.subtract(1, ordering: .sequentiallyConsistent)
            pthread_mutex_unlock(mutex)
            spins = 0
            since = 0
        }
    }

    func run(_ body: (Int) -> Void) {
        if threads == 1 {
            body(0)
            return
        }
        withoutActuallyEscaping(body) { escaping in
            job = escaping
            pending.store(threads - 1, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(wake)
                pthread_mutex_unlock(mutex)
            }
            escaping(0)
            // Stragglers: spin briefly, then yield the core to them (they may be waiting for it).
            var spins = 0
            while pending.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins < 4096 { ck_cpu_relax() } else { sched_yield() }
            }
            job = nil
        }
    }

    /// The next piece of the current `parallelFor`.
    private let nextPiece = Atomic<Int>(0)

    /// Runs `body` over `0..<count` in contiguous pieces on all threads. Pieces (about four per thread, at
    /// least `minimumPerThread` long, multiples of `alignment`) are taken from a shared counter, so a
    /// thread slowed by something else on its core leaves more of the work to the others instead of
    /// holding up the step.
    func parallelFor(_ count: Int, minimumPerThread: Int = 1, alignment: Int = 1, _ body: (Range<Int>) -> Void) {
        parallelFor(count, minimumPerThread: minimumPerThread, alignment: alignment) { _, r in body(r) }
    }

    /// `parallelFor` whose body also gets the index (0..<threads) of the thread running the piece, for
    /// per-thread scratch.
    func parallelFor(_ count: Int, minimumPerThread: Int = 1, alignment: Int = 1, _ body: (_ thread: Int, Range<Int>) -> Void) {
        let n = min(threads, max(1, count / max(1, minimumPerThread)))
        if n <= 1 {
            body(0, 0..<count)
            return
        }
        var piece = max(minimumPerThread, (count + 4 * n - 1) / (4 * n))
        piece = (piece + alignment - 1) / alignment * alignment
        nextPiece.store(0, ordering: .relaxed)
        run { i in
            guard i < n else { return }
            while true {
                let lo = nextPiece.wrappingAdd(1, ordering: .relaxed).oldValue * piece
                guard lo < count else { return }
                body(i, lo..<min(count, lo + piece))
            }
        }
    }
}

@inline(__always) private func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
