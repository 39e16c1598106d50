"""The shape of the code: the import contracts in pyproject.toml, and no import cycle anywhere."""

import grimp
from importlinter import cli

PACKAGES = ("project", "notifications", "offload", "devtools", "bench", "tests")


def test_the_import_contracts_hold():
    # The layers (project -> notifications -> offload) and "nothing that ships imports the
    # dev and test tooling": pyproject.toml's [tool.importlinter].
    assert cli.lint_imports(no_cache=True) == cli.EXIT_STATUS_SUCCESS


def build_graph() -> grimp.ImportGraph:
    # Imports under `if TYPE_CHECKING:` never run, so they cannot form a cycle.
    return grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)


def cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """Every direct import A -> B for which B also leads back to A: (A, B, ..., A)."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                found.append((importer, *back))
    return found


def test_no_module_imports_itself_back():
    assert cycles(build_graph()) == []


def test_the_cycle_of_the_old_layout_would_be_found():
    """The generic package imported the app's tasks, which import the generic package."""
    graph = build_graph()
    graph.add_import(importer="offload.outbox", imported="notifications.tasks")
    assert ("offload.outbox", "notifications.tasks", "offload", "offload.outbox") in cycles(graph)
