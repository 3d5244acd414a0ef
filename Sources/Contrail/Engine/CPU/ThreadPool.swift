#if canImport(Glibc)
import Glibc
#endif

/// Persistent worker threads for splitting one operation across cores (no thread creation per op).
/// `run` calls `body(0..<threads)` concurrently, the caller taking part 0, and returns when all finish.
final class ThreadPool: @unchecked Sendable {
    let threads: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let start = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var generation: UInt64 = 0
    private var remaining = 0
    private var job: ((Int) -> Void)?
    private var stopping = false
    private var workers: [pthread_t] = []

    init(threads: Int) {
        self.threads = max(1, threads)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(start, nil)
        pthread_cond_init(finished, nil)
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
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(start)
        pthread_mutex_unlock(mutex)
        for t in workers { pthread_join(t, nil) }
        pthread_cond_destroy(start)
        pthread_cond_destroy(finished)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        start.deallocate()
        finished.deallocate()
    }

    private func work(_ index: Int) {
        var seen: UInt64 = 0
        pthread_mutex_lock(mutex)
        while true {
            while generation == seen && !stopping { pthread_cond_wait(start, mutex) }
            if stopping { break }
            seen = generation
            let body = job!
            pthread_mutex_unlock(mutex)
            body(index)
            pthread_mutex_lock(mutex)
            remaining -= 1
            if remaining == 0 { pthread_cond_signal(finished) }
        }
        pthread_mutex_unlock(mutex)
    }

    func run(_ body: (Int) -> Void) {
        if threads == 1 {
            body(0)
            return
        }
        withoutActuallyEscaping(body) { escaping in
            pthread_mutex_lock(mutex)
            job = escaping
            remaining = threads - 1
            generation &+= 1
            pthread_cond_broadcast(start)
            pthread_mutex_unlock(mutex)
            escaping(0)
            pthread_mutex_lock(mutex)
            while remaining > 0 { pthread_cond_wait(finished, mutex) }
            job = nil
            pthread_mutex_unlock(mutex)
        }
    }

    /// Splits `0..<count` into one contiguous range per thread and runs them in parallel.
    func parallelFor(_ count: Int, minimumPerThread: Int = 1, _ body: (Range<Int>) -> Void) {
        let n = min(threads, max(1, count / max(1, minimumPerThread)))
        if n <= 1 {
            body(0..<count)
            return
        }
        run { i in
            guard i < n else { return }
            let lo = count * i / n, hi = count * (i + 1) / n
            if lo < hi { body(lo..<hi) }
        }
    }
}
