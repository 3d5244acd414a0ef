import Testing

@testable import Contrail

/// The orchestrator's scheduling as a pure value: request and slot counts in, decisions out.
@Suite("Scheduler")
struct SchedulerTests {
    /// Offers `n` requests; returns how many were admitted.
    func admit(_ s: inout Scheduler, _ n: Int) -> Int { (0..<n).filter { _ in s.admit() }.count }

    /// Drives one request from admission into a slot.
    func runToSlot(_ s: inout Scheduler) {
        #expect(s.nextTurn == .prefill)
        s.begin(.prefill)
        s.endPrefill(transferred: true)
        s.transferred()
        #expect(s.nextTurn == .decode)
        s.begin(.decode)
        s.endDecode(inserted: 1, freed: 0, steps: 1)
    }

    @Test func admitsSlotsPlusQueue() {
        var s = Scheduler(slots: 1, maxQueued: 4)
        #expect(admit(&s, 5) == 5)
        #expect(admit(&s, 1) == 0)
        #expect(s.queued == 5)
        // Once one is in its slot, the queue holds four again and is full.
        runToSlot(&s)
        #expect(s.live == 1 && s.queued == 4)
        #expect(admit(&s, 1) == 0)
        // It finishes: room for one more.
        s.begin(.decode)
        s.endDecode(inserted: 0, freed: 1, steps: 1)
        #expect(admit(&s, 1) == 1)
        #expect(admit(&s, 1) == 0)
    }

    @Test func zeroQueueMeansSlotsOnly() {
        var s = Scheduler(slots: 2, maxQueued: 0)
        #expect(admit(&s, 2) == 2)
        #expect(admit(&s, 1) == 0)
    }

    @Test func lifecycleCounts() {
        var s = Scheduler(slots: 4, maxQueued: 8)
        #expect(s.nextTurn == nil)
        #expect(admit(&s, 1) == 1)
        #expect(s.waiting == 1 && s.freeSlots == 4)
        s.begin(.prefill)
        #expect(s.prefilling == 1 && s.waiting == 0 && s.freeSlots == 3)
        #expect(s.nextTurn == nil, "the engine is busy")
        s.endPrefill(transferred: true)
        #expect(s.inTransfer == 1 && s.freeSlots == 3)
        #expect(s.nextTurn == nil, "nothing to decode until the prefix arrives")
        s.transferred()
        #expect(s.ready == 1)
        #expect(s.nextTurn == .decode)
        s.begin(.decode)
        s.endDecode(inserted: 1, freed: 0, steps: 1)
        #expect(s.live == 1 && s.ready == 0 && s.queued == 0 && s.freeSlots == 3)
    }

    @Test func prefillThatEndsAtItsFirstTokenFreesItsReservation() {
        var s = Scheduler(slots: 1, maxQueued: 1)
        #expect(admit(&s, 1) == 1)
        s.begin(.prefill)
        #expect(s.freeSlots == 0)
        s.endPrefill(transferred: false)
        #expect(s.freeSlots == 1 && s.queued == 0 && s.nextTurn == nil)
    }

    @Test func noPrefillWithoutAFreeSlot() {
        var s = Scheduler(slots: 1, maxQueued: 4)
        #expect(admit(&s, 1) == 1)
        runToSlot(&s)
        #expect(admit(&s, 1) == 1)
        // The only slot is decoding: the waiting request must wait, whatever the priority.
        #expect(s.nextTurn == .decode)
        s.begin(.decode)
        s.endDecode(inserted: 0, freed: 1, steps: 1)
        #expect(s.nextTurn == .prefill)
    }

    @Test func prefillPriorityPrefillsAsSoonAsPossible() {
        var s = Scheduler(slots: 4, maxQueued: 4, priority: .prefill)
        #expect(admit(&s, 1) == 1)
        runToSlot(&s)
        #expect(admit(&s, 1) == 1)
        #expect(s.nextTurn == .prefill, "a new request goes before the next decode step")
    }

    @Test func decodePriorityWaitsThenPrefillsInABurst() {
        var s = Scheduler(slots: 4, maxQueued: 4, priority: .decode, maxWaitingSteps: 3)
        #expect(admit(&s, 1) == 1)
        // Nothing decoding: prefill at once.
        runToSlot(&s)
        #expect(admit(&s, 2) == 2)
        // One step has run since the prefill; two more decode steps before the waiting pair gets a turn.
        for _ in 0..<2 {
            #expect(s.nextTurn == .decode)
            s.begin(.decode)
            s.endDecode(inserted: 0, freed: 0, steps: 1)
        }
        #expect(s.stepsSincePrefill == 3)
        #expect(s.nextTurn == .prefill)
        s.begin(.prefill)
        s.endPrefill(transferred: true)
        // The burst continues while requests wait and slots are free, even though decodes are pending.
        #expect(s.nextTurn == .prefill)
        s.begin(.prefill)
        s.endPrefill(transferred: true)
        s.transferred()
        s.transferred()
        #expect(s.nextTurn == .decode)
        s.begin(.decode)
        s.endDecode(inserted: 2, freed: 0, steps: 1)
        #expect(s.live == 3)
        // A new arrival waits again.
        #expect(admit(&s, 1) == 1)
        #expect(s.nextTurn == .decode)
    }

    @Test func droppedWaitingRequestsLeaveTheQueue() {
        var s = Scheduler(slots: 1, maxQueued: 1)
        #expect(admit(&s, 2) == 2)
        #expect(admit(&s, 1) == 0)
        s.dropWaiting()
        #expect(admit(&s, 1) == 1)
    }
}
