/// Who may use the engine next, as a pure value: request and slot counts in, a decision out. The
/// orchestrator's threads ask it under one lock and do what it says; it is unit-tested without threads.
///
/// A request moves waiting → prefilling → in transfer → ready (in the generate backlog) → live (in a
/// slot) → gone. A prefill reserves its slot when it starts, so every prefix has a slot to go to and
/// the KV memory held by prefixes is bounded by the slot count.
public struct Scheduler: Sendable, Equatable {
    /// Which side wins when a prefill and a decode step could both run.
    public enum Priority: String, Sendable, CaseIterable {
        /// New requests first: lowest time to first token (JetStream's behaviour).
        case prefill
        /// Running decodes first: new requests are prefilled together once `maxWaitingSteps` decode steps
        /// have passed (or nothing is decoding), which keeps inter-token latency steady.
        case decode
    }

    public enum Turn: Sendable, Equatable {
        case prefill
        case decode
    }

    public let slots: Int
    public let maxQueued: Int
    public let priority: Priority
    public let maxWaitingSteps: Int

    /// Accepted, not yet prefilling.
    public private(set) var waiting = 0
    public private(set) var prefilling = 0
    public private(set) var inTransfer = 0
    public private(set) var ready = 0
    public private(set) var live = 0
    public private(set) var engineBusy: Turn?
    public private(set) var stepsSincePrefill = 0
    /// Set when a prefill starts; while set, prefills go before decode steps (decode priority).
    private var burst = false

    public init(slots: Int, maxQueued: Int, priority: Priority = .prefill, maxWaitingSteps: Int = 16) {
        self.slots = max(1, slots)
        self.maxQueued = max(0, maxQueued)
        self.priority = priority
        self.maxWaitingSteps = max(1, maxWaitingSteps)
    }

    /// Requests accepted but not yet in a slot (what `maxQueued` bounds).
    public var queued: Int { waiting + prefilling + inTransfer + ready }
    public var freeSlots: Int { slots - live - prefilling - inTransfer - ready }

    /// Admission: at most `slots + maxQueued` requests in the system; false means answer "overloaded" at once.
    public mutating func admit() -> Bool {
        guard queued + live < slots + maxQueued else { return false }
        waiting += 1
        return true
    }

    /// The next turn, or nil when the engine is busy or there is nothing to do.
    public var nextTurn: Turn? {
        guard engineBusy == nil else { return nil }
        let canPrefill = waiting > 0 && freeSlots > 0
        let canDecode = live > 0 || ready > 0
        switch (canPrefill, canDecode) {
        case (false, false): return nil
        case (true, false): return .prefill
        case (false, true): return .decode
        case (true, true):
            switch priority {
            case .prefill: return .prefill
            case .decode: return burst || stepsSincePrefill >= maxWaitingSteps ? .prefill : .decode
            }
        }
    }

    public mutating func begin(_ turn: Turn) {
        precondition(engineBusy == nil, "engine turn already taken")
        engineBusy = turn
        switch turn {
        case .prefill:
            waiting -= 1
            prefilling += 1
            burst = true
        case .decode:
            burst = false
        }
    }

    /// A prefill turn ended: its prefix goes to transfer, or nowhere (failed, cancelled, or finished at its
    /// first token).
    public mutating func endPrefill(transferred: Bool) {
        precondition(engineBusy == .prefill)
        engineBusy = nil
        prefilling -= 1
        if transferred { inTransfer += 1 }
        stepsSincePrefill = 0
    }

    /// A decode turn ended after inserting `inserted` ready prefixes, freeing `freed` slots and running
    /// `steps` (0 or 1) decode steps.
    public mutating func endDecode(inserted: Int, freed: Int, steps: Int) {
        precondition(engineBusy == .decode)
        engineBusy = nil
        ready -= inserted
        live += inserted - freed
        stepsSincePrefill += steps
    }

    /// The transfer thread handed a prefix to the generate backlog.
    public mutating func transferred() {
        inTransfer -= 1
        ready += 1
    }

    /// A waiting request was dropped before prefill (cancelled while queued).
    public mutating func dropWaiting() { waiting -= 1 }
}
