"""The layering the README's "where things live" table promises: each layer imports only the layers
below it, at the top of its files, and no module outgrows one sitting."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Rank of each layer: a module may import its own package and anything of a lower rank.
LAYERS = [
    ("genie.core", 0),
    ("tokenizer", 1),
    ("dynamics", 1),
    ("genie.checkpoint", 2),
    ("genie.data", 2),
    ("genie.world", 3),
    ("genie.train", 4),
    ("genie.rl", 4),
    ("envs", 5),
    ("genie.cli", 6),
    ("play", 7),
]
PROJECT = ("genie", "tokenizer", "dynamics", "envs", "play")
MAX_LINES = 450


def layer_of(module: str) -> tuple[str, int] | None:
    for name, rank in LAYERS:
        if module == name or module.startswith(name + "."):
            return name, rank
    return None


def project_modules():
    for folder in ("genie", "tokenizer", "dynamics", "envs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield path, ".".join(parts)
    yield ROOT / "play.py", "play"


def imports(tree: ast.AST):
    """(module name, node) of every import of the project's own modules."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PROJECT:
                yield name, node


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for path, module in project_modules():
        own = layer_of(module)
        if own is None:  # genie/__init__.py: registers the env, imports nothing of the project
            assert module == "genie", module
            continue
        for name, node in imports(ast.parse(path.read_text())):
            target = layer_of(name)
            if target is None:
                # `from genie import core` style: resolved by the fully qualified names yielded too
                continue
            if target[0] != own[0] and target[1] >= own[1]:
                wrong.append(f"{module} imports {name} (line {node.lineno})")
    assert not wrong, "\n".join(wrong)


def test_project_imports_sit_at_the_top_of_files():
    local = []
    for path, module in project_modules():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for name, node in imports(tree):
            if id(node) not in top:
                local.append(f"{module}: {name} (line {node.lineno})")
    assert len(set(local)) <= 3, "\n".join(sorted(set(local)))


def test_no_module_over_the_line_budget():
    long = [
        f"{path.relative_to(ROOT)}: {n}"
        for path, _ in project_modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, long


def test_the_tracked_tree_stays_small():
    """No datasets, wheels or run folders in git: the whole tree travels to a GPU machine (< 40 MB)."""
    import subprocess

    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:  # not a git checkout (an sdist): nothing to check
        return
    files = [ROOT / f for f in proc.stdout.split("\0") if f and (ROOT / f).is_file()]
    assert not [f.name for f in files if f.suffix in (".whl", ".npy", ".tar", ".zip")]
    assert sum(f.stat().st_size for f in files) < 40 * 2**20
