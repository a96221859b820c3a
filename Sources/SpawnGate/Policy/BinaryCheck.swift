import CSodium
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Checks, at decision time, that a CLI's binary is what the operator approved: it exists, resolves to a regular
/// executable file, neither it nor any directory above it is writable by group or others (a world-writable
/// directory is tolerated only with the sticky bit), and it matches its `sha256:` pin when one is set.
/// A binary swapped or made writable after the policy was written is refused (`cli_not_allowed`).
public enum BinaryCheck {
    /// nil when the binary may be started, otherwise the reason it may not.
    public static func problem(_ cli: CLIEntry) -> String? {
        guard let real = realpath(cli.path, nil) else {
            return "\(cli.path) (cli '\(cli.name)') cannot be resolved: \(String(cString: strerror(errno)))"
        }
        let path = String(cString: real)
        free(real)
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return "\(path) (cli '\(cli.name)') is not a regular file" }
        guard st.st_mode & 0o111 != 0 else { return "\(path) (cli '\(cli.name)') is not executable" }
        guard st.st_mode & 0o022 == 0 else {
            return String(format: "%@ (cli '%@') has mode %o: group or others can replace its contents; run 'chmod go-w %@'", path, cli.name, Int(st.st_mode & 0o7777), path)
        }
        guard st.st_uid == 0 || st.st_uid == geteuid() else { return "\(path) (cli '\(cli.name)') belongs to uid \(st.st_uid), neither root nor the gateway's user" }
        var dir = path
        while dir != "/" {
            dir = dir.lastIndex(of: "/").map { $0 == dir.startIndex ? "/" : String(dir[..<$0]) } ?? "/"
            var ds = stat()
            guard stat(dir, &ds) == 0 else { return "cannot inspect \(dir): \(String(cString: strerror(errno)))" }
            if ds.st_mode & 0o022 != 0 && ds.st_mode & S_ISVTX == 0 {
                return String(format: "%@, a directory above %@, has mode %o: others could swap the binary; run 'chmod go-w %@'", dir, path, Int(ds.st_mode & 0o7777), dir)
            }
        }
        if let pin = cli.sha256 {
            guard let digest = sha256(file: path) else { return "cannot read \(path) to check its sha256 pin" }
            guard Sodium.equal(digest, pin) else {
                return "\(path) does not match the sha256 pinned for '\(cli.name)' (it is \(digest.hex)); if it was upgraded on purpose, update the pin"
            }
        }
        return nil
    }

    static func sha256(file: String) -> [UInt8]? {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var state = crypto_hash_sha256_state()
        crypto_hash_sha256_init(&state)
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            crypto_hash_sha256_update(&state, buf, UInt64(n))
        }
        var out = [UInt8](repeating: 0, count: 32)
        crypto_hash_sha256_final(&state, &out)
        return out
    }
}
