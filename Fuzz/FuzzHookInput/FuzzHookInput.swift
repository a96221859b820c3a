import SpawnGate

/// What a broker's pre-spawn hook writes to `spawngate hook pre-spawn` or the gateway's socket.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHookInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if case .success(let (envelope, spawn)) = HookInput.parse(bytes) {
        if case .success(let e) = Envelope.parse(envelope), case .success(let request) = SpawnRequest.parse(e.payload), let spawn {
            _ = HookInput.difference(spawn, signed: request)
        }
    }
    return 0
}
