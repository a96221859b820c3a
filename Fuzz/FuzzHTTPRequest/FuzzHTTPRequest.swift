import SpawnGate

/// The hook socket's reader (`HTTPFraming.request`): any local user who may connect chooses these bytes, several
/// requests at once on a kept-alive connection. Each request must take at least one byte and no more than arrived.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var buffer = Array(UnsafeBufferPointer(start: data, count: size))
    var requests = 0
    while requests < 64, case .request(_, let body, let consumed) = HTTPFraming.request(buffer, maxHead: 16 * 1024, maxBody: 64 * 1024) {
        precondition(consumed > 0 && consumed <= buffer.count && body.count < consumed, "a request's framing is out of bounds")
        buffer.removeFirst(consumed)
        requests += 1
    }
    _ = HTTPFraming.request(buffer, maxHead: 32, maxBody: 8)
    return 0
}
