#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file. Weights stay in the page cache and are never copied at load.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let count: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ModelFileError(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ModelFileError(path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ModelFileError(path, "not a regular file") }
        count = Int(st.st_size)
        if count == 0 {
            // mmap of length 0 fails; an empty file is still a (bad) file the parsers must reject by name.
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        guard let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw ModelFileError(path, "cannot mmap: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if count == 0 {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        } else {
            munmap(UnsafeMutableRawPointer(mutating: base), count)
        }
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

/// A bounds-checked little-endian cursor over a byte range; every overrun is a `ModelFileError`.
struct ByteReader {
    let file: String
    let bytes: UnsafeRawBufferPointer
    var offset: Int

    init(file: String, bytes: UnsafeRawBufferPointer, offset: Int = 0) {
        self.file = file
        self.bytes = bytes
        self.offset = offset
    }

    func truncated(_ what: String) -> ModelFileError {
        ModelFileError(file, "truncated: file ends at byte \(bytes.count) while reading \(what) at offset \(offset)")
    }

    mutating func skip(_ n: Int, _ what: String) throws {
        guard n >= 0, n <= bytes.count - offset else { throw truncated(what) }
        offset += n
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let size = MemoryLayout<T>.size
        guard size <= bytes.count - offset else { throw truncated(what) }
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += size
        return T(littleEndian: v)
    }

    mutating func readFloat(_ what: String) throws -> Float { Float(bitPattern: try read(UInt32.self, what)) }
    mutating func readDouble(_ what: String) throws -> Double { Double(bitPattern: try read(UInt64.self, what)) }

    mutating func readBytes(_ n: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= bytes.count - offset else { throw truncated(what) }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
        offset += n
        return slice
    }
}
