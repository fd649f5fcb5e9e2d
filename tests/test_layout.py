"""The package layout's dependency rule, read from the code's own imports (docs/architecture.md,
"Packages"): cli -> track -> predict -> models -> smal, image, geometry; train -> viz, never
predict or track; nothing imports upward. A new package must take its place in LAYERS."""

import ast
from pathlib import Path

import animax

PACKAGE = Path(animax.__file__).parent
BASE = {"geometry", "files", "safe_pickle", "untrusted", "runtime"}
# Each unit (a subpackage or a top-level module of animax) and the units it may import.
LAYERS = {
    "cli": None,                                          # the command lines may import anything
    "app": {"fit", "track", "predict", "viz", "loading", "models", "smal", "image"} | BASE,   # the web app
    "inference": {"predict", "track"},                   # the deprecated re-export
    "fit": {"track", "predict", "data", "viz", "loading", "models", "smal", "image"} | BASE,
    "track": {"predict", "viz", "loading", "models", "smal", "image"} | BASE,
    "predict": {"viz", "models", "smal", "image"} | BASE,
    "train": {"viz", "data", "models", "saved_model", "smal", "image"} | BASE,
    "loading": {"saved_model", "models", "smal"} | BASE,
    "saved_model": {"models", "smal"} | BASE,
    "convert": {"models", "smal"} | BASE,
    "viz": {"image", "smal"} | BASE,
    "data": {"image", "smal"} | BASE,
    "models": {"smal", "image"} | BASE,
    "smal": BASE,
    "image": BASE,
    "geometry": set(), "files": set(), "untrusted": set(), "runtime": set(),
    "safe_pickle": {"untrusted"},                         # its refusals are untrusted-file errors
    "assets": set(),
    "animax": {"models", "saved_model", "smal"},          # the package's own face (animax/__init__.py)
}


def unit_of(module: str) -> str:
    """animax.predict.run -> predict; animax.files -> files; animax -> animax."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path) -> set[str]:
    """The animax modules a file imports (absolute imports; animax uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= names if node.module == "animax" else names | {node.module}   # `from animax import data`
    return {name for name in found if name == "animax" or name.startswith("animax.")}


def test_every_import_follows_the_dependency_rule():
    breaches = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        unit = unit_of(module)
        assert unit in LAYERS, f"{path}: unit '{unit}' has no place in LAYERS"
        allowed = LAYERS[unit]
        for name in imports(path):
            target = unit_of(name)
            if target != unit and allowed is not None and target not in allowed:
                breaches.append(f"{module} imports {name} ({unit} -> {target})")
    assert not breaches, "\n".join(breaches)


def test_the_rule_can_fail(tmp_path):
    """The reader sees a breach: training importing the predictor."""
    (tmp_path / "step.py").write_text("from animax.predict.predictor import Predictor\nimport animax.track\n")
    assert {unit_of(n) for n in imports(tmp_path / "step.py")} - LAYERS["train"] == {"predict", "track"}
