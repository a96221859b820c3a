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
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
