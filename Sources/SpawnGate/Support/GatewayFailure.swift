/// The gateway cannot decide: broken configuration, unreadable state, a failed system call.
///
/// This is the only thing the decision path throws. A request that is merely bad is not an error but a
/// ``Denial`` value. Callers map a failure to exit code 2 and never to "allow".
public struct GatewayFailure: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An operator's command could not be carried out (a refused enrollment, a missing file).
/// The message is one sentence that names what is wrong and what to do.
public struct OperatorError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The command was turned down (a fingerprint that does not match, a name already bound): exit 1.
        case refused
        /// This machine's files cannot be used (no home, an unreadable or unwritable file): exit 2, like any
        /// gateway that cannot decide.
        case unusable
    }
    public let message: String
    public let kind: Kind
    public init(_ message: String, kind: Kind = .refused) { self.message = message; self.kind = kind }
    public static func unusable(_ message: String) -> OperatorError { OperatorError(message, kind: .unusable) }
    public var description: String { message }
}
