/// The one place the version lives: `spawngate --version`, `spawngate serve --version` and the install test read it.
public enum SpawnGateVersion {
    public static let current = "0.9.0"
}
