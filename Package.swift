// swift-tools-version: 6.2
// 6.2, not less: Hummingbird 2.28, swift-service-lifecycle 2.13 and swift-prometheus 2.4 declare 6.2.
import PackageDescription

let package = Package(
    name: "spawngate",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "SpawnGate", targets: ["SpawnGate"]),
        .executable(name: "spawngate", targets: ["spawngate"]),
        .executable(name: "spawngate-serve", targets: ["spawngate-serve"]),
        .executable(name: "spawngate-mcp", targets: ["spawngate-mcp"]),
        .executable(name: "spawngate-dashboard", targets: ["spawngate-dashboard"]),
        .executable(name: "spawngate-init", targets: ["spawngate-init"]),
        .executable(name: "spawngate-launch", targets: ["spawngate-launch"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        // Hummingbird's own NIO, named for the connection guard's channel handler (the versions it resolves to).
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", exact: "1.35.2"),
        // `relay guard`: WebSocket upgrade on the Hummingbird server, a WebSocket client and an HTTP client to the
        // upstream Relaycast, both over swift-nio-ssl (certificates verified). async-http-client and swift-nio-ssl
        // were already in the graph (through the MCP SDK); hummingbird-websocket/swift-websocket are small.
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", exact: "2.8.1"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket", exact: "1.6.2"),
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", exact: "2.37.6"),
        // `spawngate mcp`: the MCP server on stdio, linked only into spawngate-mcp.
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", exact: "0.12.1"),
    ],
    targets: [
        // libsodium does all of our cryptography (Ed25519, SHA-256, BLAKE2b, randomness).
        .systemLibrary(
            name: "CSodium", pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"]), .brew(["libsodium"])]),
        // fork/exec, Landlock and seccomp: the few things Swift cannot do safely itself.
        .target(name: "CSpawn", linkerSettings: [.linkedLibrary("seccomp")]),
        // Every agent's init (pid 1 of its pid namespace): a small static C program that cspawn_start execs, so no
        // copy of the gateway stays behind per agent. Static: no loader reads the agent's environment outside the
        // sandbox.
        .executableTarget(name: "spawngate-init", linkerSettings: [.unsafeFlags(["-static-executable"])]),
        // What an Agent Relay broker runs as a relay worker's program: a small C program that starts the start its
        // gateway prepared (cspawn_start) in the worker's terminal, then execs `spawngate launch --supervise`. C, so
        // the path to "the program runs" does not pay a Swift process's start (issue 27).
        .executableTarget(name: "spawngate-launch", dependencies: ["CSpawn"], linkerSettings: [.unsafeFlags(["-static-executable"])]),
        .target(
            name: "SpawnGate",
            dependencies: [
                "CSodium",
                "CSpawn",
                .product(name: "Yams", package: "Yams"),
                .product(name: "GRDB", package: "GRDB.swift"),
                // The gateway service logs as the server does (swift-log is an API only: no backend, no I/O here).
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The long-running gateway (`serve`): HTTP, the hooks' Unix socket, reload, metrics. Kept apart from the
        // domain so fuzz targets and the hook path do not carry the network stack's code.
        .target(
            name: "SpawnGateServer",
            dependencies: [
                "SpawnGate",
                "CSpawn",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The exit vocabulary every executable shares (0 done, 1 refused, 2 cannot decide, 64 usage), as
        // argument-parser exit codes, and the `main` that maps what a command throws through it.
        .target(
            name: "SpawnGateCLI",
            dependencies: ["SpawnGate", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // The command line. It does not link the network stack: `spawngate serve` execs spawngate-serve, so every
        // other command (the hook path and `spawn` above all) starts in a few milliseconds.
        .executableTarget(
            name: "spawngate",
            dependencies: [
                "SpawnGate",
                "SpawnGateCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "spawngate-serve",
            dependencies: [
                "SpawnGate",
                "SpawnGateCLI",
                "SpawnGateServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // `spawngate mcp`, as its own executable (execed like spawngate-serve): the MCP SDK stays out of `spawngate`,
        // whose start-up time the hook path pays per request.
        .executableTarget(
            name: "spawngate-mcp",
            dependencies: [
                "SpawnGate",
                "SpawnGateCLI",
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // `spawngate dashboard`, execed like spawngate-serve: a loopback page served with the same network stack.
        .executableTarget(
            name: "spawngate-dashboard",
            dependencies: [
                "SpawnGate",
                "SpawnGateCLI",
                "SpawnGateServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // `make bench`: measurements side by side in one run.
        .executableTarget(name: "spawngate-bench", dependencies: ["SpawnGate"]),
        // `make fuzz`: libFuzzer entry points over the parsers that read untrusted bytes. They link only the domain,
        // and build with `--sanitize fuzzer` in their own scratch path (see the Makefile).
        .executableTarget(name: "FuzzEnvelope", dependencies: ["SpawnGate"], path: "Fuzz/FuzzEnvelope"),
        .executableTarget(name: "FuzzPolicy", dependencies: ["SpawnGate"], path: "Fuzz/FuzzPolicy"),
        .executableTarget(name: "FuzzKeyLine", dependencies: ["SpawnGate"], path: "Fuzz/FuzzKeyLine"),
        .executableTarget(name: "FuzzHookInput", dependencies: ["SpawnGate"], path: "Fuzz/FuzzHookInput"),
        .executableTarget(name: "FuzzWireBody", dependencies: ["SpawnGate"], path: "Fuzz/FuzzWireBody"),
        .executableTarget(name: "FuzzHTTPResponse", dependencies: ["SpawnGate"], path: "Fuzz/FuzzHTTPResponse"),
        .executableTarget(name: "FuzzHTTPRequest", dependencies: ["SpawnGate"], path: "Fuzz/FuzzHTTPRequest"),
        .testTarget(
            name: "SpawnGateTests",
            dependencies: ["SpawnGate", "SpawnGateServer", "SpawnGateCLI", .product(name: "GRDB", package: "GRDB.swift")]),
    ],
    swiftLanguageModes: [.v6]
)
