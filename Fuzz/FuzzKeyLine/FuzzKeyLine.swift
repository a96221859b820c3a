import SpawnGate

/// The key-line parser (`keys add`, enrolled key files, peers) and the OpenSSH private-key parser (`keys import`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKeyLine(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let (key, comment) = try? PublicKey.parseLine(text) {
        // A key that parsed must print as a line that parses to the same key.
        guard let again = try? PublicKey.parseLine(key.line(comment: "again")), again.key == key else {
            fatalError("a parsed key line does not survive printing (comment \(comment.utf8.count) bytes)")
        }
    }
    _ = try? SigningKey.parseOpenSSHPrivateKey(text)
    _ = Fingerprint(text)
    return 0
}
