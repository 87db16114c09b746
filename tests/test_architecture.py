"""The library's shape: no import cycles among its modules (function-local imports included,
since a cycle hidden in a function is still a cycle), and the configuration loads no TensorFlow."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "charrnn_lib"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path, modules: set) -> set:
    """The library modules ``path`` imports anywhere in its code (``from charrnn_lib import x`` too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("charrnn_lib"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("charrnn_lib"))
    return (found & modules) - {module_name(path), "charrnn_lib"}


def import_graph() -> dict:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def test_the_import_graph_is_found():
    graph = import_graph()
    assert {"charrnn_lib.train", "charrnn_lib.fast.step", "charrnn_lib.config"} <= set(graph)
    assert "charrnn_lib.fast" in graph["charrnn_lib.train"] and "charrnn_lib.config" in graph["charrnn_lib.model"]


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + "."):      # a package importing its own submodule
                continue
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_config_and_the_leaves_import_no_other_library_module():
    graph = import_graph()
    assert graph["charrnn_lib.config"] == set() and graph["charrnn_lib.files"] == set()
    assert graph["charrnn_lib.distribute"] <= {"charrnn_lib.config", "charrnn_lib.model"}
    assert not any(m.startswith("charrnn_lib.train") for m in graph["charrnn_lib.fast.step"])
