import CShims

#if canImport(Glibc)
import Glibc
#endif

/// One background thread that fires callbacks at deadlines (gRPC deadlines). Callbacks must be quick.
public final class TimerQueue: @unchecked Sendable {
    public static let shared = TimerQueue()

    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var entries: [(at: UInt64, id: UInt64, fire: @Sendable () -> Void)] = []
    private var nextId: UInt64 = 1
    private var started = false

    private init() {
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &attr)
    }

    /// Schedules `fire` at monotonic time `at` (ns); returns a token for `cancel`.
    @discardableResult
    public func schedule(at: UInt64, _ fire: @escaping @Sendable () -> Void) -> UInt64 {
        pthread_mutex_lock(&mutex)
        let id = nextId
        nextId += 1
        entries.append((at, id, fire))
        entries.sort { $0.at < $1.at }
        if !started {
            started = true
            var t = pthread_t()
            pthread_create(&t, nil, { arg in
                Unmanaged<TimerQueue>.fromOpaque(arg!).takeUnretainedValue().run()
                return nil
            }, Unmanaged.passUnretained(self).toOpaque())
            pthread_detach(t)
        }
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
        return id
    }

    public func cancel(_ id: UInt64) {
        pthread_mutex_lock(&mutex)
        entries.removeAll { $0.id == id }
        pthread_mutex_unlock(&mutex)
    }

    private func run() {
        pthread_mutex_lock(&mutex)
        while true {
            let now = contrail_now_ns()
            if let first = entries.first, first.at <= now {
                entries.removeFirst()
                pthread_mutex_unlock(&mutex)
                first.fire()
                pthread_mutex_lock(&mutex)
                continue
            }
            if let first = entries.first {
                var ts = timespec(tv_sec: Int(first.at / 1_000_000_000), tv_nsec: Int(first.at % 1_000_000_000))
                pthread_cond_timedwait(&cond, &mutex, &ts)
            } else {
                pthread_cond_wait(&cond, &mutex)
            }
        }
    }
}
