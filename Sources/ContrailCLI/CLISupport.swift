import ArgumentParser
import Contrail

#if canImport(Glibc)
import Glibc
#endif

/// Prints `contrail: error: …` to stderr and exits 1 — a clear message for users, never a trap.
func fail(_ message: String) -> ExitCode {
    var err = "contrail: error: \(message)\n"
    err.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    return ExitCode.failure
}

/// Runs `body`, turning model-file and JSON errors into clean CLI failures.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ModelFileError {
        throw fail(e.description)
    } catch let e as JSONError {
        throw fail(e.description)
    }
}

func formatBytes(_ n: Int) -> String {
    if n >= 1 << 30 { return String(format1(Double(n) / Double(1 << 30))) + " GiB" }
    if n >= 1 << 20 { return String(format1(Double(n) / Double(1 << 20))) + " MiB" }
    if n >= 1 << 10 { return String(format1(Double(n) / Double(1 << 10))) + " KiB" }
    return "\(n) B"
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
