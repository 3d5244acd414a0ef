// swift-tools-version:6.0
import PackageDescription

// Layers live in folders of one library target (Sources/Contrail/<Layer>/); C libraries come from
// Debian through system-library targets. Few targets keep 2-core builds quick.
let package = Package(
    name: "Contrail",
    products: [
        .executable(name: "contrail", targets: ["ContrailCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "CNGHTTP2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CSentencePiece", pkgConfig: "sentencepiece", providers: [.apt(["libsentencepiece-dev"])]),
        // protoc-c output for Protos/jetstream.proto (scripts/gen-proto.sh regenerates it).
        .target(name: "CJetStream", dependencies: ["CProtobufC"]),
        // Small C/C++ helpers: the extern "C" face of libsentencepiece, epoll/socket plumbing, OpenSSL glue.
        .target(name: "CShims", dependencies: ["CSentencePiece", "COpenSSL"], linkerSettings: [.linkedLibrary("stdc++")]),
        // Compute kernels in C, optimized even in debug builds (engine tests run real models).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // The PJRT C API calls (plugins are dlopen'd at run time; nothing links against them).
        .target(name: "CPJRT", linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "Contrail",
            dependencies: ["CNGHTTP2", "COpenSSL", "CJetStream", "CShims", "CKernels", "CPJRT"],
            // Loop-confined state needs no dynamic exclusivity checks in release builds (debug keeps them).
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "ContrailCLI",
            dependencies: ["Contrail", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "ContrailTests", dependencies: ["Contrail", "CJetStream"]),
    ],
    swiftLanguageModes: [.v6],
    cxxLanguageStandard: .cxx17
)
