import ArgumentParser
import Foundation
import SpawnGate

/// The one exit vocabulary of every executable (`spawngate`, `spawngate-serve` and its `relay-guard`,
/// `spawngate-mcp`, `spawngate-dashboard`), as argument-parser exit codes: 0 allowed or done, 1 denied or refused,
/// 2 cannot decide (no verified answer, a machine that cannot act), 3 pending (held for approval), 64 usage. The statuses themselves come from the
/// library's table (``ReasonCode/exitStatus`` for a decision, ``CommandStatus/init(for:)`` for an error); nothing
/// here or in a command decides a number of its own.
public enum Exit {
    public static let denied = of(CommandStatus.denied)
    public static let cannotDecide = of(CommandStatus.cannotDecide)
    /// The status of a decision or receipt with this reason.
    public static func of(_ reason: ReasonCode) -> ExitCode { of(reason.exitStatus) }
    public static func of(_ status: CommandStatus) -> ExitCode { ExitCode(status.rawValue) }
    /// The status of an error, printing nothing (the caller has said what happened).
    public static func of(error: any Error) -> ExitCode { of(CommandStatus(for: error)) }

    /// What an error thrown by a command's `run()` exits with. argument-parser's own outcomes pass through
    /// unchanged (``ExitCode``, ``CleanExit``, and a ``ValidationError``, which is a usage error: 64); any other
    /// error is printed as its sentence and exits with ``CommandStatus/init(for:)``'s status, so an error no
    /// command expected cannot decide (2) rather than reading as a refusal (argument-parser's own 1).
    public static func forRun(_ error: any Error) -> any Error {
        switch error {
        case is ExitCode, is CleanExit, is ValidationError: return error
        default:
            // argument-parser's own errors (its internal CommandError carries `--help` and `--version` from the
            // built-in commands it runs) go back to it to print and exit as it does.
            if String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") { return error }
            return failure(error)
        }
    }
}

/// Prints an error's sentence (`spawngate: …`, or `spawngate: <doing>: …`) and returns its status from the one
/// mapping (``CommandStatus/init(for:)``), so every command reports the same error with the same status.
public func failure(_ error: any Error, doing: String? = nil) -> ExitCode {
    Console.error((doing.map { $0 + ": " } ?? "") + String(describing: error))
    return Exit.of(error: error)
}

/// Runs a command's body and maps the errors of this package (``OperatorError``, ``GatewayFailure``,
/// ``RemoteError``, ``Denial``, ``Handoff/Failure``) through ``failure(_:doing:)``, here, where the command can still
/// print what it printed before; argument-parser's own errors and exit codes pass through.
public func exiting<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as OperatorError { throw failure(e) } catch let e as GatewayFailure { throw failure(e) }
    catch let e as RemoteError { throw failure(e) } catch let e as Denial { throw failure(e) }
    catch let e as Handoff.Failure { throw failure(e) }
}

extension AsyncParsableCommand {
    /// argument-parser's `main`, with the errors a command's `run()` throws mapped by ``Exit/forRun(_:)``: what
    /// every executable's `main` calls. Parsing and validation errors exit as argument-parser says (64, or 0 for
    /// `--help`).
    public static func mainWithExitVocabulary(_ arguments: [String]?) async {
        var command: any ParsableCommand
        do { command = try await asyncParseAsRoot(arguments) } catch { exit(withError: error) }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exitNow(Exit.forRun(error))
        }
    }

    /// Exits as argument-parser's `exit(withError:)` does. An ``ExitCode`` prints nothing, so it exits at once:
    /// argument-parser would first build the help text of the whole command tree only to print none of it, which
    /// costs a fresh process that denies (`check`, `launch`) milliseconds (perf, issue 27).
    public static func exitNow(_ error: any Error) -> Never {
        if let code = error as? ExitCode { Foundation.exit(code.rawValue) }
        exit(withError: error)
    }
}
