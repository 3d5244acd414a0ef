import CShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Something registered with an event loop: it is told when its fd is ready and on every tick.
protocol EventHandler: AnyObject {
    /// Called on the loop thread with epoll's event bits.
    func handleEvents(_ events: UInt32)
}

/// Receives the loop's periodic tick (timeouts are checked on ticks, ~100 ms apart).
protocol TickHandler: AnyObject {
    func tick(now: UInt64)
}

/// One I/O thread: an epoll set, an eventfd so other threads can hand it work, and a periodic tick for
/// timeouts. Everything registered with a loop is touched only on its thread.
final class EventLoop: @unchecked Sendable {
    let index: Int
    private let epfd: Int32
    private let wakeFd: Int32
    private var handlers: [Int32: EventHandler] = [:]
    private var tickers: [ObjectIdentifier: TickHandler] = [:]
    private var flushQueue: [Connection] = []
    /// Monotonic time of the current iteration (one clock read per wake-up, not per read or write).
    private(set) var now: UInt64 = contrail_now_ns()
    private let pending = Locked<[() -> Void]>([])
    private let stopping = Atomic<Bool>(false)
    private var thread = pthread_t()
    private let threadId = Atomic<UInt>(0)
    static let tickNanos: UInt64 = 100_000_000
    /// Shared by the loop's connections: a read is processed before the next one starts.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Connection.readChunk, alignment: 64)

    // <sys/epoll.h> values (Glibc's Swift module does not export them).
    static let readable: UInt32 = 0x001
    static let writable: UInt32 = 0x004
    static let error: UInt32 = 0x008
    static let hangup: UInt32 = 0x010
    static let exclusive: UInt32 = 1 << 28  // EPOLLEXCLUSIVE: one loop wakes per new connection
    static let ctlAdd: Int32 = 1, ctlDel: Int32 = 2, ctlMod: Int32 = 3

    init(index: Int) throws {
        self.index = index
        epfd = contrail_epoll_create()
        wakeFd = contrail_eventfd()
        guard epfd >= 0, wakeFd >= 0 else { throw NetError.system("epoll/eventfd", errno) }
        guard contrail_epoll_ctl(epfd, Self.ctlAdd, wakeFd, Self.readable, UInt64(wakeFd)) == 0 else {
            throw NetError.system("epoll_ctl(eventfd)", errno)
        }
    }

    deinit {
        readBuffer.deallocate()
        close(epfd)
        close(wakeFd)
    }

    var inLoop: Bool { threadId.load(ordering: .relaxed) == UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))) }

    // MARK: registration (loop thread only)

    func register(_ fd: Int32, events: UInt32, handler: EventHandler) throws {
        guard contrail_epoll_ctl(epfd, Self.ctlAdd, fd, events, UInt64(UInt32(bitPattern: fd))) == 0 else {
            throw NetError.system("epoll_ctl(add)", errno)
        }
        handlers[fd] = handler
    }

    func modify(_ fd: Int32, events: UInt32) {
        _ = contrail_epoll_ctl(epfd, Self.ctlMod, fd, events, UInt64(UInt32(bitPattern: fd)))
    }

    func unregister(_ fd: Int32) {
        _ = contrail_epoll_ctl(epfd, Self.ctlDel, fd, 0, 0)
        handlers[fd] = nil
    }

    /// Connections with output to write at the end of this iteration (loop thread only).
    func scheduleFlush(_ c: Connection) { flushQueue.append(c) }

    func addTicker(_ t: TickHandler) { tickers[ObjectIdentifier(t)] = t }
    func removeTicker(_ t: TickHandler) { tickers[ObjectIdentifier(t)] = nil }

    // MARK: cross-thread

    /// Runs `task` on the loop thread (soon; in submission order). From the loop thread itself it runs
    /// at the end of the current iteration, without a wake-up.
    func execute(_ task: @escaping () -> Void) {
        let wasEmpty = pending.withLock { q in
            q.append(task)
            return q.count == 1
        }
        if wasEmpty && !inLoop { wake() }
    }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFd, &one, 8)
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        wake()
    }

    // MARK: the loop

    func start() throws {
        let box = Unmanaged.passRetained(self)
        let rc = pthread_create(&thread, nil, { arg in
            let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
            loop.run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw NetError.system("pthread_create", rc)
        }
    }

    func join() { pthread_join(thread, nil) }

    private func run() {
        threadId.store(UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))), ordering: .relaxed)
        var data = [UInt64](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        var nextTick = contrail_now_ns() + Self.tickNanos
        while !stopping.load(ordering: .acquiring) {
            let now = contrail_now_ns()
            let timeout = now >= nextTick ? 0 : Int32((nextTick - now) / 1_000_000) + 1
            let n = contrail_epoll_wait(epfd, &data, &events, 256, timeout)
            if n < 0 && errno != EINTR { break }
            self.now = contrail_now_ns()
            for i in 0..<max(0, Int(n)) {
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data[i]))
                if fd == wakeFd {
                    var v: UInt64 = 0
                    _ = read(wakeFd, &v, 8)
                    continue
                }
                handlers[fd]?.handleEvents(events[i])
            }
            runPendingAndFlush()
            let after = self.now
            if after >= nextTick {
                for t in Array(tickers.values) { t.tick(now: after) }
                nextTick = after + Self.tickNanos
            }
        }
        runPending()
    }

    private func runPendingAndFlush() {
        repeat {
            runPending()
            while !flushQueue.isEmpty {
                let batch = flushQueue
                flushQueue.removeAll(keepingCapacity: true)
                for c in batch { c.flushScheduledOutput() }
            }
        } while pending.withLock({ !$0.isEmpty })
    }

    private func runPending() {
        while true {
            let tasks = pending.withLock { q -> [() -> Void] in
                let t = q
                q.removeAll(keepingCapacity: true)
                return t
            }
            if tasks.isEmpty { return }
            for t in tasks { t() }
        }
    }
}

public enum NetError: Error, CustomStringConvertible {
    case system(String, Int32)
    case config(String)

    public var description: String {
        switch self {
        case .system(let what, let code): return "\(what): \(String(cString: strerror(code)))"
        case .config(let m): return m
        }
    }
}
