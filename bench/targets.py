"""A row for bench/results.md's Targets table, from a bench script that runs after spawngate-bench wrote the file."""
import os


def add_target(path, target, measured, met, where=""):
    """Inserts `| target | measured: met/not met | where |` at the end of the Targets table of `path`; if the file
    has no such table (the Swift bench did not run), the row is printed and nothing is written."""
    row = f"| {target} | {measured}: {'met' if met else '**not met**'} | {'' if met else where} |"
    lines = open(path).read().split("\n") if os.path.exists(path) else []
    try:
        header = lines.index("| target | measured | where the time goes |")
    except ValueError:
        print(f"no Targets table in {path}; the row: {row}")
        return
    end = header
    while end + 1 < len(lines) and lines[end + 1].startswith("|"):
        end += 1
    lines.insert(end + 1, row)
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)
