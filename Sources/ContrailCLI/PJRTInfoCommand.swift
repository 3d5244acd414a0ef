import ArgumentParser
import Contrail

/// Checks a PJRT plugin the way the server will use it: load, API version, client, platform, devices,
/// and (with --smoke) one compiled program run on the first device.
struct PJRTInfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pjrt-info",
        abstract: "Load a PJRT plugin (libtpu.so, the CUDA plugin, the XLA CPU plugin) and report what it sees.")

    @Option(name: .customLong("pjrt-plugin"), help: "Path of the plugin's shared library.") var plugin: String
    @Option(name: .long, help: "Device count for the XLA CPU plugin (cpu_device_count).") var cpuDevices: Int?
    @Flag(name: .long, help: "Also compile and run a small StableHLO program on device 0.") var smoke = false

    func run() throws {
        do {
            let p = try PJRTPlugin.load(plugin)
            print("plugin: \(plugin) (PJRT API \(p.apiVersion.major).\(p.apiVersion.minor))")
            let client = try PJRTClient(plugin: p, cpuDeviceCount: cpuDevices)
            print("platform: \(client.platform), \(client.deviceCount) addressable device(s)")
            if smoke {
                let exe = try client.compile("""
                    module @smoke {
                      func.func public @main(%a: tensor<3xf32>) -> tensor<3xf32> {
                        %r = stablehlo.multiply %a, %a : tensor<3xf32>
                        return %r : tensor<3xf32>
                      }
                    }
                    """)
                let out = try exe.execute([client.upload([1, 2, 3] as [Float], shape: [3])])[0].download(as: Float.self)
                guard out == [1, 4, 9] else { throw fail("smoke program returned \(out), expected [1, 4, 9]") }
                print("smoke: ok")
            }
        } catch let e as PJRTError {
            throw fail(e.message)
        }
    }
}
