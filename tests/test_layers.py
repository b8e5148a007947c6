"""The package's layering, checked by parsing every module's imports (no import side effects)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "speechdistill"
# Lower layers must not reach up: data and models are used by everything above them.
FORBIDDEN = {
    "data": ("train", "methods", "export", "cli", "run", "asr", "prune", "models", "evaluation", "report"),
    "models": ("train", "methods", "export", "cli", "run", "asr", "prune", "evaluation", "report"),
    "train": ("methods", "export", "cli", "run"),
    "methods": ("cli", "run"),
    "export": ("cli", "run"),
    "asr": ("cli", "run"),
    "prune": ("cli", "run", "methods"),
    "units": ("train", "methods", "export", "cli", "run", "asr", "prune"),
    "study": ("cli", "run", "train", "methods", "export", "prune"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def test_lower_layers_import_nothing_from_higher_ones():
    problems = []
    for layer, higher in FORBIDDEN.items():
        for path in sorted((PKG / layer).rglob("*.py")):
            for lineno, name in _imports(path):
                parts = name.split(".")
                if parts[0] == "speechdistill" and len(parts) > 1 and parts[1] in higher:
                    problems.append(f"{path.relative_to(PKG.parent)}:{lineno} imports {name}")
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_no_import_cycles_between_modules():
    """Module-level (top of file) imports form no cycle: lazy imports inside functions are allowed."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps = set()
        for node in tree.body:  # top level only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("speechdistill"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("speechdistill")}
        graph[mod] = deps
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen or m not in graph:
            return
        stack.append(m)
        for d in graph[m]:
            visit(d)
        stack.pop()
        seen.add(m)

    for m in sorted(graph):
        visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
