import ArgumentParser
import SpawnGate

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create this broker's home: an identity keypair and a default-deny policy.",
        discussion: "Refuses to overwrite an existing identity. Prints the public key line and fingerprint to give to the operators of other brokers.")

    @OptionGroup var home: HomeOption
    @Option(help: ArgumentHelp("This broker's name, as other brokers will enroll it (e.g. vps-broker).", valueName: "name"))
    var name: String

    func run() throws {
        try operatorAction {
            let root = home.resolved.root
            let identity = try Home.initialize(at: root, name: name)
            print("created \(root) for broker \(identity.name)")
            print(identity.key.publicKey.line(comment: identity.name))
            print(identity.key.publicKey.fingerprint)
        }
    }
}
