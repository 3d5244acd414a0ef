import Testing

@testable import Contrail

/// The PJRT runtime layer on the real XLA CPU plugin (`make fixtures` fetches it from PyPI).
@Suite("PJRT runtime (XLA CPU plugin)", .serialized)
struct PJRTTests {
    static let pluginPath = ModelLocation.fixtures + "/pjrt_c_api_cpu_plugin.so"

    static let program = """
        module @smoke {
          func.func public @main(%a: tensor<4xf32>, %b: tensor<4xf32>, %m: tensor<2x3xf32>, %v: tensor<3xf32>, %i: tensor<3xi32>)
              -> (tensor<4xf32>, tensor<2xf32>, tensor<3xi32>) {
            %s = stablehlo.add %a, %b : tensor<4xf32>
            %d = stablehlo.dot_general %m, %v, contracting_dims = [1] x [0] : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2xf32>
            %j = stablehlo.multiply %i, %i : tensor<3xi32>
            return %s, %d, %j : tensor<4xf32>, tensor<2xf32>, tensor<3xi32>
          }
        }
        """

    @Test func compilesAndRunsOnTwoDevices() throws {
        let plugin = try PJRTPlugin.load(Self.pluginPath)
        #expect(plugin.apiVersion.major == 0 && plugin.apiVersion.minor >= 81)
        let client = try PJRTClient(plugin: plugin, cpuDeviceCount: 2)
        #expect(client.platform == "cpu" && client.deviceCount == 2)
        let exe = try client.compile(Self.program)
        #expect(exe.outputCount == 3)
        #expect(try client.compile(Self.program) === exe, "the same text compiles once")
        for device in 0..<2 {
            let args = [try client.upload([1, 2, 3, 4] as [Float], shape: [4], device: device),
                        try client.upload([10, 20, 30, 40] as [Float], shape: [4], device: device),
                        try client.upload([1, 2, 3, 4, 5, 6] as [Float], shape: [2, 3], device: device),
                        try client.upload([1, 0, -1] as [Float], shape: [3], device: device),
                        try client.upload([2, -3, 7] as [Int32], shape: [3], device: device)]
            // The executable was compiled for one device (device 0); run it there only.
            guard device == 0 else { continue }
            let out = try exe.execute(args)
            #expect(out.count == 3)
            #expect(try out[0].download(as: Float.self) == [11, 22, 33, 44])
            #expect(try out[1].download(as: Float.self) == [-2, -2])
            #expect(try out[2].download(as: Int32.self) == [4, 9, 49])
        }
    }

    @Test func clearErrors() throws {
        let missing = #expect(throws: PJRTError.self) { try PJRTPlugin.load("/nonexistent/libtpu.so") }
        #expect(missing?.message.contains("cannot load PJRT plugin /nonexistent/libtpu.so") == true)
        // A shared library that is not a plugin.
        let notPlugin = #expect(throws: PJRTError.self) { try PJRTPlugin.load("libz.so.1") }
        #expect(notPlugin?.message.contains("exports no GetPjrtApi") == true)
        // A file that is not a shared library at all.
        let text = #expect(throws: PJRTError.self) { try PJRTPlugin.load(ModelLocation.fixtures + "/tokenizer_llama3.tiktoken") }
        #expect(text?.message.contains("cannot load PJRT plugin") == true)

        let client = try PJRTClient(plugin: try PJRTPlugin.load(Self.pluginPath), cpuDeviceCount: 1)
        let bad = #expect(throws: PJRTError.self) { try client.compile("module { func.func public @main() -> tensor<2xf32> { nonsense } }") }
        #expect(bad.map { $0.code > 0 && $0.message.hasPrefix("PJRT_Client_Compile: ") } == true)
        let shape = #expect(throws: PJRTError.self) { try client.upload([1, 2, 3] as [Float], shape: [2, 2]) }
        #expect(shape?.message.contains("do not fill shape [2, 2]") == true)
        // Wrong argument count: the plugin's own message, not a crash.
        let exe = try client.compile(Self.program)
        let wrong = #expect(throws: PJRTError.self) { try exe.execute([try client.upload([1] as [Float], shape: [1])]) }
        #expect(wrong.map { $0.code > 0 } == true)
    }
}
