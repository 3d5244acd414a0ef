/// `x` to one decimal place ("12.0", "3.5"), for logs and summaries.
public func format1(_ x: Double) -> String {
    guard x.isFinite else { return "\(x)" }
    let r = (x * 10).rounded() / 10
    return r == r.rounded() ? "\(Int(r)).0" : "\(r)"
}
