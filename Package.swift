// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "spawngate",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "SpawnGate", targets: ["SpawnGate"]),
        .executable(name: "spawngate", targets: ["spawngate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
    ],
    targets: [
        // libsodium does all of our cryptography (Ed25519, SHA-256, BLAKE2b, randomness).
        .systemLibrary(
            name: "CSodium", pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"]), .brew(["libsodium"])]),
        // fork/exec, Landlock and seccomp: the few things Swift cannot do safely itself.
        .target(name: "CSpawn", linkerSettings: [.linkedLibrary("seccomp")]),
        .target(
            name: "SpawnGate",
            dependencies: [
                "CSodium",
                "CSpawn",
                .product(name: "Yams", package: "Yams"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]),
        .executableTarget(
            name: "spawngate",
            dependencies: [
                "SpawnGate",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // `make bench`: measurements side by side in one run.
        .executableTarget(name: "spawngate-bench", dependencies: ["SpawnGate"]),
        .testTarget(
            name: "SpawnGateTests",
            dependencies: ["SpawnGate", .product(name: "GRDB", package: "GRDB.swift")]),
    ],
    swiftLanguageModes: [.v6]
)
