import ArgumentParser
import SpawnGate
import SpawnGateCLI

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create this broker's home: an identity keypair and a default-deny policy.",
        discussion: "Refuses to overwrite an existing identity. Prints the public key line and fingerprint to give to the operators of other brokers.")

    @OptionGroup var home: HomeOption
    @Option(help: ArgumentHelp("This broker's name, as other brokers will enroll it (e.g. vps-broker).", valueName: "name"))
    var name: String?
    @Flag(help: ArgumentHelp("Only create an empty state store in an existing home, after the old one was lost.", discussion: """
        Wait max_ttl + clock_skew after the loss first: an empty store does not know which nonces were used, so a \
        request signed before the loss could otherwise run again. Rate buckets and leases start empty too.
        """))
    var state = false

    func validate() throws {
        if state && name != nil { throw ValidationError("--state works on an existing home; it takes no --name") }
        if !state && name == nil { throw ValidationError("Missing expected argument '--name <name>'") }
    }

    func run() throws {
        try operatorAction {
            if state {
                let home = home.resolved
                guard !Files.exists(home.stateDB) else {
                    throw OperatorError("\(home.stateDB) exists; refusing to replace it (it remembers which requests were already used)")
                }
                _ = try home.loadIdentity()
                try home.createState()
                print("created an empty state store \(home.stateDB)")
                return
            }
            guard let name else { return }
            let root = home.resolved.root
            let identity = try Home.initialize(at: root, name: name)
            print("created \(root) for broker \(identity.name)")
            print(identity.key.publicKey.line(comment: identity.name))
            print(identity.key.publicKey.fingerprint)
        }
    }
}
