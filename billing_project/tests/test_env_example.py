"""`.env.example` lists every setting the service reads from the environment, each under a comment
of its own: every `env(...)` of the settings, and what gunicorn's configuration and the commands read."""

import ast
import re
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
VARIABLE = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=")


def _settings_read() -> set[str]:
    """The names passed to `env(...)`, `env.str(...)`, `env.int(...)`... in billing_project/settings.py."""
    tree = ast.parse((BASE_DIR / "billing_project" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        function = node.func
        reads_env = (isinstance(function, ast.Name) and function.id == "env") or (
            isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == "env"
        )
        if reads_env and isinstance(node.args[0].value, str):
            names.add(node.args[0].value)
    return names


def _os_environ_read(*paths: Path) -> set[str]:
    pattern = re.compile(r"os\.environ\.get\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
    return {name for path in paths for name in pattern.findall(path.read_text())}


def _documented() -> dict[str, str]:
    """Each variable of .env.example with the comment line above it."""
    lines = (BASE_DIR / ".env.example").read_text().splitlines()
    documented = {}
    for above, line in zip([""] + lines, lines, strict=False):
        if match := VARIABLE.match(line):
            documented[match.group(1)] = above
    return documented


def test_every_setting_the_settings_read_is_in_env_example():
    read = _settings_read()

    assert len(read) > 60  # the parse found the settings
    assert read - set(_documented()) == set()


def test_what_gunicorn_and_the_commands_read_is_in_env_example_too():
    read = _os_environ_read(
        BASE_DIR / "gunicorn.conf.py", *(BASE_DIR / "billing_project" / "management" / "commands").glob("*.py")
    )

    assert {"PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR", "DEMO_ADMIN_PASSWORD"} <= read
    assert read - set(_documented()) == set()


def test_each_variable_has_a_comment_line_of_its_own():
    undocumented = [
        name for name, above in _documented().items() if not above.startswith("# ") or VARIABLE.match(above)
    ]

    assert undocumented == []
