/// `x` to one decimal place ("12.0", "3.5"), for logs and summaries.
public func format1(_ x: Double) -> String {
    guard x.isFinite else { return "\(x)" }
    let r = (x * 10).rounded() / 10
    return r == r.rounded() ? "\(Int(r)).0" : "\(r)"
}

/// `x` to two decimal places ("12.00", "3.57"), for benchmark tables.
public func format2(_ x: Double) -> String {
    guard x.isFinite else { return "\(x)" }
    let r = (x * 100).rounded() / 100
    let whole = Int(r.magnitude), cents = Int((r.magnitude * 100).rounded()) % 100
    return (r < 0 ? "-" : "") + "\(whole)." + (cents < 10 ? "0" : "") + "\(cents)"
}
