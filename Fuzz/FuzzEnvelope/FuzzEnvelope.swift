import SpawnGate

/// The envelope parser and both payload parsers, as a gateway meets them: any bytes from the network.
/// Payload parsers normally run only after the signature verified, so they get the raw input too: an enrolled
/// but hostile (or buggy) broker controls those bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEnvelope(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if case .success(let envelope) = Envelope.parse(bytes) {
        _ = envelope.requestID
        _ = SpawnRequest.parse(envelope.payload)
        _ = ControlRequest.parse(envelope.payload)
    }
    if case .success(let request) = SpawnRequest.parse(bytes) {
        // Whatever parsed must encode again and parse to the same request: the signed bytes are the truth.
        guard case .success(let again) = SpawnRequest.parse(request.encoded()), again == request else {
            fatalError("a parsed spawn request does not survive encoding")
        }
    }
    _ = ControlRequest.parse(bytes)
    return 0
}
