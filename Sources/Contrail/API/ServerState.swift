import Synchronization

/// The readiness Kubernetes probes see. The serving layer owns transitions (loading → warming → ready →
/// draining); probes only read it, so they never wait on the engine.
public final class ServerState: Sendable {
    public enum Phase: Int, Sendable {
        case starting = 0, loading, warming, ready, draining
        public var name: String { ["starting", "loading", "warming", "ready", "draining"][rawValue] }
    }

    private let phase = Atomic<Int>(Phase.starting.rawValue)

    public init(_ initial: Phase = .starting) { phase.store(initial.rawValue, ordering: .relaxed) }

    public var current: Phase { Phase(rawValue: phase.load(ordering: .acquiring))! }
    public var isReady: Bool { current == .ready }
    public func set(_ p: Phase) { phase.store(p.rawValue, ordering: .releasing) }
}
