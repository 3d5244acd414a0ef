/// Stop strings over streamed text, compared as Unicode scalars (so a stop that begins or ends inside a
/// grapheme cluster still matches).
enum StopMatcher {
    /// Where the earliest stop string begins in `text`, if any does.
    static func firstMatch(in text: String, _ stops: [String]) -> String.UnicodeScalarView.Index? {
        var best: String.UnicodeScalarView.Index?
        for stop in stops where !stop.isEmpty {
            if let r = text.unicodeScalars.firstRange(of: stop.unicodeScalars), best.map({ r.lowerBound < $0 }) ?? true {
                best = r.lowerBound
            }
        }
        return best
    }

    /// The length (in scalars) of the longest tail of `text` that is a proper prefix of some stop string:
    /// text that must be held back because the next token may complete a stop.
    static func partialSuffix(of text: String, _ stops: [String]) -> Int {
        let longest = stops.map { $0.unicodeScalars.count }.max() ?? 0
        let t = Array(text.unicodeScalars.suffix(longest))
        var keep = 0
        for stop in stops {
            let s = Array(stop.unicodeScalars)
            var k = min(t.count, s.count - 1)
            while k > keep {
                if t[(t.count - k)...].elementsEqual(s[..<k]) {
                    keep = k
                    break
                }
                k -= 1
            }
        }
        return keep
    }
}
