import SpawnGate

/// A peer's answer as the client reads it (`HTTPFraming.response`): whoever answers `spawn --broker`, `spawngate
/// mcp`, the dashboard or `serve`'s own calls chooses these bytes. Besides not trapping, the framing must not depend
/// on how the bytes were cut: an answer framed from a prefix is the answer framed from the whole.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPResponse(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 1 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let maxBody = 1 << 20
    let whole = HTTPFraming.response(bytes, atEnd: false, maxBody: maxBody)
    _ = HTTPFraming.response(bytes, atEnd: true, maxBody: maxBody)
    _ = HTTPFraming.response(bytes, atEnd: false, maxHead: 64, maxBody: 16)
    let cut = Int(data[0]) * bytes.count / 256
    if case .response(let status, let body, let consumed, _) = HTTPFraming.response(Array(bytes[..<cut]), atEnd: false, maxBody: maxBody) {
        precondition(consumed <= cut, "an answer took more bytes than had arrived")
        guard case .response(status, body, consumed, _) = whole else { preconditionFailure("the framing depends on where the bytes were cut") }
    }
    return 0
}
