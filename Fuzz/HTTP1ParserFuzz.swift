// libFuzzer target for the HTTP/1.1 parser (`make fuzz`). Built by swiftc with -sanitize=fuzzer,address
// from the parser's own sources. Besides "no crash", it checks a differential property: any split of
// the input yields the same events as feeding it whole.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP1Parser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var limits = HTTPLimits()
    limits.maxHeaderBytes = 2048
    limits.maxTargetBytes = 512
    limits.maxBodyBytes = 4096
    var whole = HTTP1Parser(limits: limits)
    let expected = whole.feed(bytes)
    guard size > 1 else { return 0 }
    // Split at a position derived from the data, and byte by byte for short inputs.
    let cut = Int(bytes[0]) % size
    var split = HTTP1Parser(limits: limits)
    let events = split.feed(Array(bytes[..<cut])) + split.feed(Array(bytes[cut...]))
    if events != expected { fatalError("split at \(cut) changed the parse") }
    if size < 256 {
        var single = HTTP1Parser(limits: limits)
        var all: [HTTP1ParseEvent] = []
        for b in bytes { all += single.feed([b]) }
        if all != expected { fatalError("byte-by-byte feeding changed the parse") }
    }
    return 0
}
