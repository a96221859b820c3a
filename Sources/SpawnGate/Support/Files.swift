import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// File operations that either complete or leave the old file untouched, and permission checks in the
/// style of OpenSSH's StrictModes.
public enum Files {
    /// Writes `contents` to `path` atomically: a new file in the same directory (created with `mode`, never
    /// wider), fsync, rename over the target, fsync the directory. A crash leaves either the old or the new
    /// file, never a half-written one. With `exclusive`, refuses to replace an existing file.
    public static func writeAtomically(_ path: String, _ contents: [UInt8], mode: mode_t, exclusive: Bool = false) throws(OperatorError) {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = "\(dir)/.\((path as NSString).lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw OperatorError.unusable("cannot create \(tmp): \(errnoText())") }
        var ok = false
        defer { if !ok { unlink(tmp) } }
        // The umask may have narrowed the mode; that is fine. Widening is what we must never do.
        var written = 0
        while written < contents.count {
            let n = contents.withUnsafeBytes { write(fd, $0.baseAddress! + written, contents.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = errnoText(); close(fd)
                throw OperatorError.unusable("cannot write \(path): \(e)")
            }
            written += n
        }
        guard fsync(fd) == 0 else { let e = errnoText(); close(fd); throw OperatorError.unusable("cannot sync \(path): \(e)") }
        close(fd)
        if exclusive {
            // link() fails if the target exists: no window in which another writer's file could be replaced.
            guard link(tmp, path) == 0 else {
                throw errno == EEXIST ? OperatorError("\(path) already exists; refusing to overwrite it") : OperatorError.unusable("cannot create \(path): \(errnoText())")
            }
            unlink(tmp)
        } else {
            guard rename(tmp, path) == 0 else { throw OperatorError.unusable("cannot replace \(path): \(errnoText())") }
        }
        ok = true
        syncDirectory(dir)
    }

    static func syncDirectory(_ dir: String) {
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Reads a whole file, refusing one larger than `limit` bytes (reading stops as soon as it is over).
    public static func read(_ path: String, limit: Int) throws(OperatorError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw OperatorError.unusable("cannot read \(path): \(errnoText())") }
        defer { close(fd) }
        let out = try readAll(fd, name: path, limit: limit)
        if out.count > limit { throw OperatorError("\(path) is larger than \(limit) bytes; refusing to read it") }
        return out
    }

    /// Reads `count` bytes at offset `from` (fewer if the file is shorter).
    public static func read(_ path: String, from offset: Int, count: Int) throws(OperatorError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw OperatorError.unusable("cannot read \(path): \(errnoText())") }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, count - got, off_t(offset + got)) }
            if n < 0 { if errno == EINTR { continue }; throw OperatorError.unusable("cannot read \(path): \(errnoText())") }
            if n == 0 { break }
            got += n
        }
        return Array(out[0..<got])
    }

    /// Reads a request from standard input or a path ("-" or nil means standard input). Either way it reads only
    /// a little past `limit` and returns what it read, so the caller refuses an oversized request as its own input
    /// error (an envelope over 64 KiB is `malformed`, exit 1) whichever way it came, and an endless stream or a
    /// huge file cannot grow memory. Only a file that cannot be opened or read is an error here.
    public static func readInput(_ path: String?, limit: Int) throws(OperatorError) -> [UInt8] {
        guard let path, path != "-" else { return try readAll(0, name: "standard input", limit: limit) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw OperatorError.unusable("cannot read \(path): \(errnoText())") }
        defer { close(fd) }
        return try readAll(fd, name: path, limit: limit)
    }

    /// Reads until end of file or until more than `limit` bytes have arrived.
    private static func readAll(_ fd: Int32, name: String, limit: Int) throws(OperatorError) -> [UInt8] {
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count <= limit {
            let n = buf.withUnsafeMutableBytes { posixRead(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw OperatorError.unusable("cannot read \(name): \(errnoText())") }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// Refuses a secret file that others could read, or that belongs to someone else.
    public static func checkPrivate(_ path: String) throws(OperatorError) {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw OperatorError.unusable("cannot open \(path): \(errnoText())") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw OperatorError.unusable("\(path) is not a regular file (a symlink or device is refused)") }
        guard st.st_uid == geteuid() else {
            throw OperatorError.unusable("\(path) is owned by uid \(st.st_uid), not by you (uid \(geteuid())); refusing to use it")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw OperatorError.unusable(String(format: "%@ has mode %o, so other users can read or change it; run 'chmod 600 %@' and check that the key has not leaked", path, Int(st.st_mode & 0o777), path))
        }
    }

    /// Refuses a configuration file or directory that someone other than its owner could change. A directory
    /// writable by others is tolerated with the sticky bit (as /tmp), where others cannot replace our files.
    public static func checkNotWritableByOthers(_ path: String) throws(OperatorError) {
        var st = stat()
        guard stat(path, &st) == 0 else { throw OperatorError.unusable("cannot open \(path): \(errnoText())") }
        if (st.st_mode & S_IFMT) == S_IFDIR, st.st_mode & S_ISVTX != 0, st.st_uid == 0 || st.st_uid == geteuid() { return }
        guard st.st_uid == geteuid() || st.st_uid == 0 else {
            throw OperatorError.unusable("\(path) is owned by uid \(st.st_uid), neither you (uid \(geteuid())) nor root; refusing to trust it: if it is yours, run 'chown \(geteuid()) \(path)', else remove it")
        }
        guard st.st_mode & 0o022 == 0 else {
            throw OperatorError.unusable(String(format: "%@ has mode %o, so other users can change it; run 'chmod go-w %@'", path, Int(st.st_mode & 0o777), path))
        }
    }

    /// The size of a regular file (not followed through a symlink), or nil.
    public static func size(_ path: String) -> Int? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int(st.st_size)
    }

    /// The target of a symbolic link (a /proc magic link included), or nil.
    public static func readLink(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4097)
        let n = readlink(path, &buf, 4096)
        return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    public static func makeDirectory(_ path: String, mode: mode_t) throws(OperatorError) {
        guard mkdir(path, mode) == 0 || errno == EEXIST else { throw OperatorError.unusable("cannot create \(path): \(errnoText())") }
    }

    public static func modificationTime(_ path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_mtim.tv_sec)
    }
}

/// `read(2)`, outside `Files` whose own `read` would shadow it.
private func posixRead(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buf, count) }

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// What a change to a file would alter: inode, size, change and modification times in nanoseconds. Lets a
/// long-running process notice an edit, a replacement by rename, or a removal without reading the file.
public struct FileStamp: Equatable, Sendable {
    let inode: UInt64, size: Int64, mtime: Int64, ctime: Int64

    public init(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { inode = 0; size = -1; mtime = 0; ctime = 0; return }
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        ctime = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
    }
}

extension Files {
    /// A file an agent may have written (its repository, its cwd), read as data: symlinks followed (as git does), but only a
    /// regular file, opened without blocking (a FIFO or a device in its place would hang ``Files/read(_:limit:)``),
    /// and at most `limit` bytes. Nil when it does not exist; an error when it is something else or too large.
    static func readRegular(_ path: String, limit: Int) throws(OperatorError) -> [UInt8]? {
        try readRegularWithStat(path, limit: limit)?.bytes
    }

    /// ``readRegular(_:limit:)`` with the `stat` of the file read (its size and times).
    static func readRegularWithStat(_ path: String, limit: Int) throws(OperatorError) -> (bytes: [UInt8], stat: stat)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw OperatorError.unusable("cannot read \(path): \(errnoText())")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw OperatorError.unusable("cannot read \(path): \(errnoText())") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw OperatorError("\(path) is not a regular file") }
        guard st.st_size <= off_t(limit) else { throw OperatorError("\(path) is larger than \(limit) bytes") }
        var out = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var got = 0
        while got < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + got, $0.count - got) }
            if n < 0 { if errno == EINTR { continue }; throw OperatorError.unusable("cannot read \(path): \(errnoText())") }
            if n == 0 { break }
            got += n
            if got == out.count, out.count <= limit { out += [UInt8](repeating: 0, count: min(limit + 1, out.count * 2) - out.count) }
        }
        guard got <= limit else { throw OperatorError("\(path) is larger than \(limit) bytes") }
        return (Array(out[0..<got]), st)
    }
}
