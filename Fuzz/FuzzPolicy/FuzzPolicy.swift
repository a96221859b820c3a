import SpawnGate

/// The policy loader (YAML through Yams, then our strict reader), and the engine on whatever loaded: an operator's
/// typo must be an error naming the line, never a crash, and any policy that loads must decide without one.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPolicy(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    switch PolicyLoader.parse(text, file: "fuzz.yaml") {
    case .failure(let error):
        _ = error.description
    case .success(let policy):
        let engine = PolicyEngine(policy: policy, resolver: .lexical)
        for broker in ["mac-laptop", "*", ""] {
            let request = PolicyRequest(broker: broker, cli: "claude", cwd: "/srv/app/../app/src", args: ["--model", "opus"])
            _ = engine.explain(request)
        }
        _ = PolicyTestRunner.run(policy)
    }
    _ = PeerList.parse(text, file: "fuzz-peers.yaml")
    return 0
}
