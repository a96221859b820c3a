import ArgumentParser
import Foundation
import SpawnGate
import SpawnGateCLI

struct Sign: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a signed spawn-request envelope (one line of JSON).",
        discussion: "The request is signed with this broker's identity key and is valid from now for --ttl seconds.")
    @OptionGroup var home: HomeOption
    @Option(help: ArgumentHelp("The target broker (the audience).", valueName: "target")) var to: String
    @Option(help: ArgumentHelp("The agent's name.", valueName: "name")) var name: String
    @Option(help: ArgumentHelp("The CLI to start, as the target's policy names it (e.g. claude).", valueName: "cli")) var cli: String
    @Option(help: ArgumentHelp("The task text for the agent.", valueName: "text")) var task: String?
    @Option(help: ArgumentHelp("The working directory on the target.", valueName: "dir")) var cwd: String?
    @Option(help: ArgumentHelp("The model.", valueName: "model")) var model: String?
    @Option(name: .customLong("arg"), parsing: .unconditionalSingleValue, help: ArgumentHelp("One argument for the CLI; repeat for more.", valueName: "arg")) var args: [String] = []
    @Option(name: .customLong("channel"), help: ArgumentHelp("An Agent Relay channel; repeat for more.", valueName: "channel")) var channels: [String] = []
    @Option(help: ArgumentHelp("An Agent Relay team.", valueName: "team")) var team: String?
    @Option(help: ArgumentHelp("Seconds the request stays valid.", valueName: "seconds")) var ttl: Int64 = 60

    func validate() throws {
        guard ttl > 0 else { throw ValidationError("'--ttl' must be a positive number of seconds.") }
    }

    func run() throws {
        try operatorAction {
            let id = try home.resolved.loadIdentity()
            let now = SystemClock().now()
            let request = SpawnRequest(name: name, cli: cli, task: task, cwd: cwd, model: model,
                                       args: args.isEmpty ? nil : args, channels: channels.isEmpty ? nil : channels,
                                       team: team, from: id.name, to: to, iat: now, exp: now + ttl)
            print(String(decoding: Envelope.seal(request.encoded(), with: id.key, domain: .request), as: UTF8.self))
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a request's signature, audience and validity window (not the policy).",
        discussion: "Exit 0 when all three hold, 1 when the request is refused, 2 when this gateway cannot decide.")
    @OptionGroup var home: HomeOption
    @Argument(help: ArgumentHelp("The envelope file, or - for standard input.", valueName: "file")) var file: String?
    @Flag(help: "Print the decision as JSON.") var json = false

    func run() throws {
        let home = home.resolved
        let decision: Decision = try exiting {
            let id = try home.loadIdentity()
            let input = try Files.readInput(file, limit: Envelope.maxSize)
            // The policy sets the window; a home without a policy file uses the defaults (verify never authorizes).
            let window = Files.exists(home.policyFile) ? try PolicyLoader.loadForDecisions(home.policyFile).window : .defaults
            let verifier = RequestVerifier(audience: id.name, keys: home.keyStore, window: window)
            return Decision(try verifier.verify(input))
        }
        if json { print(decision.json) } else { print(decision.summary) }
        if !decision.allowed { throw Exit.of(decision.reason) }
    }
}
