"""The repository explains itself: nothing in it points at files a person who clones it does not have."""
import re
import subprocess

from conftest import REPO

OUTSIDE = re.compile(r"(\.\./shared/|shared/(DESIGN|REFERENCE|STYLE)\.md|(?<![\w/.])(DESIGN|REFERENCE|STYLE)\.md)")


def test_no_file_cites_a_document_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        if not name.endswith((".py", ".md", ".yaml", ".toml", ".txt")) or name.startswith("docs/benchmark_runs/"):
            continue
        for number, line in enumerate((REPO / name).read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
