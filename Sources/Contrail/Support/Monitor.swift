import CShims

#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex with one condition variable (monotonic clock), at stable addresses. The serving
/// threads block on it; ThreadSanitizer understands it.
final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    @inline(__always)
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    /// Waits for a broadcast (call with the lock held).
    func wait() { pthread_cond_wait(cond, mutex) }

    /// Waits for a broadcast or `nanos` (call with the lock held).
    func wait(nanos: UInt64) {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let total = UInt64(ts.tv_nsec) + nanos
        ts.tv_sec += Int(total / 1_000_000_000)
        ts.tv_nsec = Int(total % 1_000_000_000)
        pthread_cond_timedwait(cond, mutex, &ts)
    }

    /// Wakes every waiter (call with the lock held, or not).
    func broadcast() { pthread_cond_broadcast(cond) }
}

/// A FIFO with a capacity, shared by threads: `push` blocks while full, `pop` while empty; `close` wakes
/// everyone, after which `push` fails and `pop` drains what is left, then returns nil.
final class BoundedQueue<Element>: @unchecked Sendable {
    let capacity: Int
    private let monitor = Monitor()
    private var items: [Element] = []
    private var head = 0
    private var closed = false

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { monitor.withLock { items.count - head } }

    /// False when the queue is closed (the item was not taken).
    @discardableResult
    func push(_ item: Element) -> Bool {
        monitor.withLock {
            while items.count - head >= capacity && !closed { monitor.wait() }
            if closed { return false }
            items.append(item)
            monitor.broadcast()
            return true
        }
    }

    /// Adds without waiting; false when full or closed.
    func tryPush(_ item: Element) -> Bool {
        monitor.withLock {
            guard items.count - head < capacity && !closed else { return false }
            items.append(item)
            monitor.broadcast()
            return true
        }
    }

    func pop() -> Element? {
        monitor.withLock {
            while items.count == head && !closed { monitor.wait() }
            return take()
        }
    }

    func tryPop() -> Element? { monitor.withLock { take() } }

    /// Takes out every waiting element that matches, in order.
    func removeAll(where match: (Element) -> Bool) -> [Element] {
        monitor.withLock {
            var kept: [Element] = [], removed: [Element] = []
            for item in items[head...] {
                if match(item) { removed.append(item) } else { kept.append(item) }
            }
            if !removed.isEmpty {
                items = kept
                head = 0
                monitor.broadcast()
            }
            return removed
        }
    }

    func close() {
        monitor.withLock {
            closed = true
            monitor.broadcast()
        }
    }

    private func take() -> Element? {
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        // Compact once the consumed prefix dominates, so the array does not grow without bound.
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        monitor.broadcast()
        return item
    }
}

/// A joinable pthread running one closure.
public final class JoinableThread: @unchecked Sendable {
    private var thread = pthread_t()

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        final class Box {
            let name: String
            let body: @Sendable () -> Void
            init(_ name: String, _ body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
        }
        let box = Unmanaged.passRetained(Box(name, body))
        let rc = pthread_create(&thread, nil, { arg in
            let b = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            contrail_set_thread_name(b.name)
            b.body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed (\(rc)) for thread \(name)")
    }

    public func join() { pthread_join(thread, nil) }
}
