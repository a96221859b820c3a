/// Variables that may never be passed to an agent, whatever the policy says: each one changes which code a
/// program loads or runs (the dynamic loader, shell start-up files, language runtimes' preload hooks), so listing
/// one would turn "run claude" into "run anything". Modelled on sudo's `initial_badenv_table`.
public enum EnvironmentPolicy {
    static let forbiddenNames: Set<String> = [
        "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH", "GLOBIGNORE",
        "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
        "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "MALLOC_CONF",
        "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_ASKPASS", "SSH_ASKPASS", "GIT_CONFIG", "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_TEMPLATE_DIR",
        "PATH", "HOME", "SHELL", "EDITOR", "VISUAL", "PAGER", "BROWSER",
    ]
    static let forbiddenPrefixes = ["LD_", "DYLD_", "_RLD", "PYTHON", "PERL5", "PERLLIB", "RUBY", "GEM_", "KRB5",
                                    "TERMINFO", "BASH_FUNC_", "LUA_", "GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"]

    /// nil when `name` may be listed; otherwise why not.
    public static func refusal(_ name: String) -> String? {
        let valid = !name.isEmpty && name.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
            && !("0"..."9").contains(name.unicodeScalars.first!)
        guard valid else { return "'\(name)' is not a variable name (use A–Z, 0–9 and _)" }
        if forbiddenNames.contains(name) || forbiddenPrefixes.contains(where: { name.hasPrefix($0) }) {
            return "\(name) can never be passed to an agent: it changes which code a program loads or runs (PATH, HOME and SHELL are set by the spawner)"
        }
        return nil
    }
}
