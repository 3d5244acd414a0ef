import CPJRT

/// A PJRT call that failed: the plugin's absl status code (1…16; -1 for errors of ours) and its message.
public struct PJRTError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String
    public var description: String { message }
}

/// Runs a CPJRT call with a message buffer and turns a non-zero result into a `PJRTError`.
@inline(__always)
func pjrtCheck(_ context: String, _ body: (UnsafeMutablePointer<CChar>, Int) -> Int32) throws(PJRTError) {
    var buffer = [CChar](repeating: 0, count: 2048)
    let rc = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
    if rc != 0 { throw PJRTError(code: rc, message: "\(context): \(string(terminated: buffer))") }
}

/// The text of a NUL-terminated C string filled into `buffer`.
func string(terminated buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A dlopen'd PJRT plugin (libtpu, the CUDA plugin, the XLA CPU plugin). Loaded once per path per
/// process: plugins keep global state and are never unloaded.
public final class PJRTPlugin: @unchecked Sendable {
    public let path: String
    let raw: OpaquePointer
    public let apiVersion: (major: Int, minor: Int)
    private static let loaded = Locked<[String: PJRTPlugin]>([:])

    private init(path: String, raw: OpaquePointer) {
        self.path = path
        self.raw = raw
        var major: Int32 = 0, minor: Int32 = 0
        contrail_pjrt_api_version(raw, &major, &minor)
        apiVersion = (Int(major), Int(minor))
    }

    public static func load(_ path: String) throws(PJRTError) -> PJRTPlugin {
        if let p = loaded.withLock({ $0[path] }) { return p }
        var message = [CChar](repeating: 0, count: 2048)
        let raw = message.withUnsafeMutableBufferPointer { contrail_pjrt_open(path, $0.baseAddress, $0.count) }
        guard let raw else {
            throw PJRTError(code: -1, message: string(terminated: message))
        }
        let plugin = PJRTPlugin(path: path, raw: raw)
        return loaded.withLock { cache in
            if let p = cache[path] { return p }
            cache[path] = plugin
            return plugin
        }
    }
}

/// A client of a plugin: its addressable devices, compilation (cached by program text) and buffers.
public final class PJRTClient: @unchecked Sendable {
    public let plugin: PJRTPlugin
    let raw: UnsafeMutableRawPointer
    public let platform: String
    let devices: [UnsafeMutableRawPointer]
    /// Each device's id, as device assignments name it.
    let deviceIDs: [Int]
    /// Weak, so an executable (which keeps its client alive) is freed once its users drop it.
    private let executables = Locked<[String: WeakExecutable]>([:])

    public var deviceCount: Int { devices.count }

    /// `cpuDeviceCount` sets the XLA CPU plugin's device count (other plugins take no options here).
    public init(plugin: PJRTPlugin, cpuDeviceCount: Int? = nil) throws(PJRTError) {
        self.plugin = plugin
        var client: UnsafeMutableRawPointer?
        try pjrtCheck("PJRT_Client_Create") { contrail_pjrt_client_create(plugin.raw, Int64(cpuDeviceCount ?? 0), &client, $0, $1) }
        guard let client else { throw PJRTError(code: -1, message: "PJRT_Client_Create returned no client") }
        raw = client
        var name = [CChar](repeating: 0, count: 64)
        var devicePointer: UnsafePointer<UnsafeMutableRawPointer?>?
        var count = 0
        var ids: [Int] = []
        do throws(PJRTError) {
            try pjrtCheck("PJRT_Client_PlatformName") { m, c in
                name.withUnsafeMutableBufferPointer { contrail_pjrt_platform_name(plugin.raw, client, $0.baseAddress, $0.count, m, c) }
            }
            try pjrtCheck("PJRT_Client_AddressableDevices") { contrail_pjrt_devices(plugin.raw, client, &devicePointer, &count, $0, $1) }
            for i in 0..<count {
                var id: Int32 = 0
                try pjrtCheck("PJRT_DeviceDescription_Id") { contrail_pjrt_device_id(plugin.raw, devicePointer?[i], &id, $0, $1) }
                ids.append(Int(id))
            }
        } catch {
            contrail_pjrt_client_destroy(plugin.raw, client)
            throw error
        }
        platform = string(terminated: name)
        devices = (0..<count).compactMap { devicePointer?[$0] }
        deviceIDs = ids
        guard !devices.isEmpty else {
            contrail_pjrt_client_destroy(plugin.raw, client)
            throw PJRTError(code: -1, message: "the \(platform) PJRT client has no addressable devices")
        }
    }

    deinit { contrail_pjrt_client_destroy(plugin.raw, raw) }

    /// Serialized CompileOptionsProto. One device: a portable executable (the device is chosen at each
    /// execution). A group: `num_partitions` = its size, SPMD partitioning, and a device assignment
    /// placing partition i on `devices[i]`.
    func compileOptions(devices group: [Int]) -> [UInt8] {
        var build = ProtoWireWriter()  // ExecutableBuildOptionsProto
        build.varintField(4, 1)  // num_replicas
        build.varintField(5, UInt64(group.count))  // num_partitions
        if group.count > 1 {
            build.boolField(6, true)  // use_spmd_partitioning
            var assignment = ProtoWireWriter()  // DeviceAssignmentProto
            assignment.varintField(1, 1)  // replica_count
            assignment.varintField(2, UInt64(group.count))  // computation_count
            for d in group {
                var computation = ProtoWireWriter()
                computation.varintField(1, UInt64(deviceIDs[d]))  // replica_device_ids
                assignment.bytesField(3, computation.bytes)
            }
            build.bytesField(9, assignment.bytes)  // device_assignment
        }
        var options = ProtoWireWriter()  // CompileOptionsProto
        options.bytesField(3, build.bytes)  // executable_build_options
        if group.count == 1 { options.boolField(4, true) }  // compile_portable_executable
        return options.bytes
    }

    /// Compiles StableHLO MLIR text (`@main` must be public) for one device, any of the client's, or for
    /// a tensor-parallel group (partition i runs on `devices[i]`); the same text and group compile once.
    public func compile(_ mlir: String, devices group: [Int] = [0]) throws(PJRTError) -> PJRTExecutable {
        guard !group.isEmpty, group.allSatisfy(devices.indices.contains), Set(group).count == group.count else {
            throw PJRTError(code: -1, message: "compile: devices \(group) are not distinct devices of the \(platform) client's \(deviceCount)")
        }
        let key = group.count == 1 ? mlir : "\(group)\n" + mlir
        if let e = executables.withLock({ $0[key]?.value }) { return e }
        var executable: UnsafeMutableRawPointer?
        var text = Array(mlir.utf8)
        var options = compileOptions(devices: group)
        try pjrtCheck("PJRT_Client_Compile") { m, c in
            text.withUnsafeMutableBufferPointer { t in
                options.withUnsafeMutableBufferPointer { o in
                    t.withMemoryRebound(to: CChar.self) {
                        contrail_pjrt_compile(plugin.raw, raw, $0.baseAddress, $0.count, o.baseAddress, o.count, &executable, m, c)
                    }
                }
            }
        }
        guard let executable else { throw PJRTError(code: -1, message: "PJRT_Client_Compile returned no executable") }
        var outputs = 0
        do throws(PJRTError) {
            try pjrtCheck("PJRT_Executable_NumOutputs") { contrail_pjrt_num_outputs(plugin.raw, executable, &outputs, $0, $1) }
        } catch {
            contrail_pjrt_executable_destroy(plugin.raw, executable)
            throw error
        }
        let e = PJRTExecutable(client: self, raw: executable, outputs: outputs, group: group.count == 1 ? nil : group)
        return executables.withLock { cache in
            if let existing = cache[key]?.value { return existing }
            cache[key] = WeakExecutable(value: e)
            return e
        }
    }

    /// A device buffer holding `values` with `shape` (row-major).
    public func upload<T: PJRTElement>(_ values: [T], shape: [Int], device: Int = 0) throws(PJRTError) -> PJRTBuffer {
        guard shape.reduce(1, *) == values.count else {
            throw PJRTError(code: -1, message: "upload: \(values.count) values do not fill shape \(shape)")
        }
        guard devices.indices.contains(device) else { throw PJRTError(code: -1, message: "upload: no device \(device)") }
        var buffer: UnsafeMutableRawPointer?
        let dims = shape.map { Int64($0) }
        try pjrtCheck("PJRT_Client_BufferFromHostBuffer") { m, c in
            values.withUnsafeBytes { data in
                contrail_pjrt_buffer_from_host(plugin.raw, raw, devices[device], data.baseAddress, T.pjrtType, dims, dims.count, &buffer, m, c)
            }
        }
        guard let buffer else { throw PJRTError(code: -1, message: "PJRT_Client_BufferFromHostBuffer returned no buffer") }
        return PJRTBuffer(client: self, raw: buffer)
    }
}

extension PJRTClient {
    /// `values` whole on every device of `group`.
    public func upload<T: PJRTElement>(_ values: [T], shape: [Int], on group: [Int]) throws(PJRTError) -> DeviceArray {
        DeviceArray(try group.map { d throws(PJRTError) in try upload(values, shape: shape, device: d) })
    }

    /// Zeros of `shape` and `element` (f32, bf16, i8) on `group`, laid out as `sharding` says.
    func zeros(_ shape: [Int], _ element: String, _ sharding: Sharding, on group: [Int]) throws(PJRTError) -> DeviceArray {
        var part = shape
        if case .split(let d) = sharding { part[d] /= group.count }
        let n = part.reduce(1, *)
        switch element {
        case "bf16": return try upload([BFloat16Bits](repeating: .zero, count: n), shape: part, on: group)
        case "i8": return try upload([Int8](repeating: 0, count: n), shape: part, on: group)
        default: return try upload([Float](repeating: 0, count: n), shape: part, on: group)
        }
    }
}

struct WeakExecutable {
    weak var value: PJRTExecutable?
}

/// A compiled program, for one device (chosen per execution) or a fixed device group; keeps its client alive.
public final class PJRTExecutable: @unchecked Sendable {
    let client: PJRTClient
    let raw: UnsafeMutableRawPointer
    public let outputCount: Int
    /// The devices of a partitioned program, partition by partition; nil for a one-device program.
    let group: [Int]?

    init(client: PJRTClient, raw: UnsafeMutableRawPointer, outputs: Int, group: [Int]?) {
        self.client = client
        self.raw = raw
        outputCount = outputs
        self.group = group
    }

    deinit { contrail_pjrt_executable_destroy(client.plugin.raw, raw) }

    /// Runs on `device` (an index into the client's devices) with `arguments` (on that device) and
    /// waits; each output is a new buffer there.
    public func execute(_ arguments: [PJRTBuffer], device: Int = 0) throws(PJRTError) -> [PJRTBuffer] {
        try execute(arguments.map { DeviceArray([$0]) }, devices: [device]).map { $0.parts[0] }
    }

    /// Runs on `devices` — the one device of a portable program, or exactly the group a partitioned one
    /// was compiled for — with each argument's parts in the group's order; waits, and returns each
    /// output's parts the same way.
    public func execute(_ arguments: [DeviceArray], devices: [Int]) throws(PJRTError) -> [DeviceArray] {
        if let group, group != devices {
            throw PJRTError(code: -1, message: "execute: the program was compiled for devices \(group), not \(devices)")
        }
        guard group != nil || devices.count == 1, let first = devices.first, client.devices.indices.contains(first) else {
            throw PJRTError(code: -1, message: "execute: no device \(devices) for a one-device program")
        }
        if let bad = arguments.firstIndex(where: { $0.parts.count != devices.count }) {
            throw PJRTError(code: -1, message: "execute: argument \(bad) has \(arguments[bad].parts.count) parts for \(devices.count) devices")
        }
        let n = devices.count
        // Device-major: every argument of device 0, then of device 1, …
        var args: [UnsafeMutableRawPointer?] = []
        args.reserveCapacity(n * arguments.count)
        for d in 0..<n { for a in arguments { args.append(a.parts[d].raw) } }
        var outputs = [UnsafeMutableRawPointer?](repeating: nil, count: n * outputCount)
        let target = group == nil ? client.devices[first] : nil
        try pjrtCheck("PJRT_LoadedExecutable_Execute") { m, c in
            args.withUnsafeBufferPointer { a in
                outputs.withUnsafeMutableBufferPointer { o in
                    contrail_pjrt_execute(client.plugin.raw, raw, target, n, a.baseAddress, arguments.count, o.baseAddress, outputCount, m, c)
                }
            }
        }
        withExtendedLifetime(arguments) {}
        let buffers = outputs.map { $0.map { PJRTBuffer(client: client, raw: $0) } }
        var result: [DeviceArray] = []
        for i in 0..<outputCount {
            let parts = (0..<n).compactMap { buffers[$0 * outputCount + i] }
            guard parts.count == n else { throw PJRTError(code: -1, message: "execute: output \(i) is missing on some devices") }
            result.append(DeviceArray(parts))
        }
        return result
    }
}

/// One program argument or result on a device group: a buffer per device, in the group's order — the
/// whole array on each (replicated), or each device's part of it (sharded).
public struct DeviceArray: @unchecked Sendable {
    public let parts: [PJRTBuffer]
    public init(_ parts: [PJRTBuffer]) { self.parts = parts }
}

/// A device buffer; destroyed with its last reference.
public final class PJRTBuffer: @unchecked Sendable {
    let client: PJRTClient
    let raw: UnsafeMutableRawPointer

    init(client: PJRTClient, raw: UnsafeMutableRawPointer) {
        self.client = client
        self.raw = raw
    }

    deinit { contrail_pjrt_buffer_destroy(client.plugin.raw, raw) }

    /// A copy on device `device` of the same client.
    public func copy(to device: Int) throws(PJRTError) -> PJRTBuffer {
        guard client.devices.indices.contains(device) else { throw PJRTError(code: -1, message: "copy: no device \(device)") }
        var copy: UnsafeMutableRawPointer?
        try pjrtCheck("PJRT_Buffer_CopyToDevice") { contrail_pjrt_buffer_copy_to_device(client.plugin.raw, raw, client.devices[device], &copy, $0, $1) }
        guard let copy else { throw PJRTError(code: -1, message: "PJRT_Buffer_CopyToDevice returned no buffer") }
        return PJRTBuffer(client: client, raw: copy)
    }

    /// The buffer's contents on the host.
    public func download<T: PJRTElement>(as _: T.Type = T.self) throws(PJRTError) -> [T] {
        var size = 0
        try pjrtCheck("PJRT_Buffer_ToHostBuffer (size)") { contrail_pjrt_buffer_size(client.plugin.raw, raw, &size, $0, $1) }
        var out = [T](repeating: T.zero, count: size / MemoryLayout<T>.stride)
        try pjrtCheck("PJRT_Buffer_ToHostBuffer") { m, c in
            out.withUnsafeMutableBytes { contrail_pjrt_buffer_to_host(client.plugin.raw, raw, $0.baseAddress, $0.count, m, c) }
        }
        return out
    }
}

/// Host element types that map onto PJRT buffer types.
public protocol PJRTElement: Sendable {
    static var pjrtType: Int32 { get }
    static var zero: Self { get }
}

extension Float: PJRTElement {
    public static var pjrtType: Int32 { Int32(CONTRAIL_PJRT_F32) }
}

extension Int32: PJRTElement {
    public static var pjrtType: Int32 { Int32(CONTRAIL_PJRT_S32) }
}

extension UInt32: PJRTElement {
    public static var pjrtType: Int32 { Int32(CONTRAIL_PJRT_U32) }
}

extension Int8: PJRTElement {
    public static var pjrtType: Int32 { Int32(CONTRAIL_PJRT_S8) }
}

/// bf16 values by their bit pattern.
public struct BFloat16Bits: PJRTElement, Equatable {
    public var bits: UInt16
    public init(_ bits: UInt16) { self.bits = bits }
    public static var pjrtType: Int32 { Int32(CONTRAIL_PJRT_BF16) }
    public static var zero: BFloat16Bits { BFloat16Bits(0) }
}
